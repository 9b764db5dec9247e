"""``drcl analyze errors | weight-norms | attention``: each parses its own arguments.

Runs are named on the command line as ``NAME=PATH`` (``baseline=work/ft_base``); a bare path
is named after its file or folder. A fine-tuning run dir stands for its
``eval/detections_bbox.json`` (errors) or ``model_final.safetensors`` (weight norms, attention).
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from drcl.utils.io import atomic_write, atomic_write_json, read_json

RUN_DIR_DETECTIONS = Path("eval") / "detections_bbox.json"


def parse_named(items: list[str], flag: str) -> dict[str, str]:
    """``['a=x.json', 'y.json']`` -> ``{'a': 'x.json', 'y': 'y.json'}``; names must be unique."""
    out: dict[str, str] = {}
    for item in items:
        name, sep, path = item.partition("=")
        if not sep:
            name, path = Path(item.rstrip("/")).stem, item
        if not name or not path:
            raise ValueError(f"{flag} {item!r}: expected NAME=PATH")
        if name in out:
            raise ValueError(f"{flag}: name {name!r} given twice; use NAME=PATH to tell them apart")
        out[name] = path
    return out


def _detections_path(path: str) -> str:
    p = Path(path)
    return str(p / RUN_DIR_DETECTIONS) if p.is_dir() else path


# ----------------------------------------------------------------------------- errors


def _errors_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="drcl analyze errors", description="error breakdown per frequency group"
    )
    p.add_argument("--gt", required=True, help="ground-truth json (LVIS or COCO)")
    p.add_argument("--dets", nargs="+", required=True, metavar="NAME=DETS", help="results json")
    p.add_argument("--train-ann", help="training json, for classes without 'frequency'")
    p.add_argument("--out", required=True, help="folder for errors.json and errors.png")
    p.add_argument("--t-f", type=float, default=0.5, help="foreground IoU (default 0.5)")
    p.add_argument("--t-b", type=float, default=0.1, help="background IoU (default 0.1)")
    p.add_argument("--max-dets", type=int, default=300, help="detections per image (LVIS: 300)")
    p.add_argument("--min-score", type=float, default=0.0, help="leave out lower scores")
    return p


def run_errors(ns: argparse.Namespace) -> int:
    from drcl.analysis.errors import error_breakdown, format_error_table, plot_error_breakdown

    runs = parse_named(ns.dets, "--dets")
    results = {}
    for name, path in runs.items():
        results[name] = error_breakdown(
            ns.gt, _detections_path(path), ns.train_ann, ns.t_f, ns.t_b, ns.max_dets, ns.min_score
        )
    out = Path(ns.out)
    meta = {"gt": ns.gt, "dets": runs, "train_ann": ns.train_ann}
    atomic_write_json(out / "errors.json", {"inputs": meta, "runs": results}, indent=2)
    plot_error_breakdown(results, out / "errors.png")
    print(format_error_table(results))
    print(f"wrote {out / 'errors.json'} and {out / 'errors.png'}")
    return 0


# ----------------------------------------------------------------------------- weight norms


def _weight_norms_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="drcl analyze weight-norms", description="classifier weight norm per class"
    )
    p.add_argument("--ckpt", nargs="+", required=True, metavar="NAME=CKPT", help="detector weights")
    p.add_argument("--train-ann", required=True, help="training json (class counts and groups)")
    p.add_argument("--out", required=True, help="folder for weight_norms.json and .png")
    return p


def training_classes(train_ann: str) -> list[dict[str, Any]]:
    """Per class in label order 1..C: id, name, training instances and frequency group."""
    from drcl.analysis.errors import category_groups

    train = read_json(train_ann)
    if not isinstance(train, dict) or not isinstance(train.get("categories"), list):
        raise ValueError(f"{train_ann}: top-level 'categories' missing or not a list")
    cats = sorted(train["categories"], key=lambda c: int(c["id"]))
    groups = category_groups(cats, train)
    ids = [int(c["id"]) for c in cats]
    counts = np.zeros(len(ids), np.int64)
    index = {cid: i for i, cid in enumerate(ids)}
    for k, ann in enumerate(train.get("annotations", [])):
        cid = ann.get("category_id") if isinstance(ann, dict) else None
        if cid not in index:
            raise ValueError(
                f"{train_ann}: annotation {k}: unknown or missing 'category_id' {cid!r}"
            )
        counts[index[cid]] += 1
    return [
        {"id": cid, "name": c.get("name", str(cid)), "instances": int(n), "group": groups[cid]}
        for cid, c, n in zip(ids, cats, counts)
    ]


def run_weight_norms(ns: argparse.Namespace) -> int:
    from drcl.analysis.weight_norms import classifier_weight_norms, group_means, plot_weight_norms

    classes = training_classes(ns.train_ann)
    groups = [c["group"] for c in classes]
    runs = parse_named(ns.ckpt, "--ckpt")
    norms = {name: classifier_weight_norms(path, len(classes)) for name, path in runs.items()}
    out = Path(ns.out)
    summary = {
        name: {"group_means": group_means(n, groups), "norms": n.tolist()}
        for name, n in norms.items()
    }
    payload = {"inputs": {"ckpt": runs, "train_ann": ns.train_ann}, "classes": classes}
    atomic_write_json(out / "weight_norms.json", payload | {"runs": summary}, indent=2)
    counts = np.array([c["instances"] for c in classes])
    plot_weight_norms(norms, counts, groups, out / "weight_norms.png")
    print(f"{'run':<20} {'rare':>8} {'common':>8} {'frequent':>8}   (mean ||w_c||)")
    for name, s in summary.items():
        means = " ".join(f"{s['group_means'].get(g, float('nan')):8.3f}" for g in "rcf")
        print(f"{name[:20]:<20} {means}")
    print(f"wrote {out / 'weight_norms.json'} and {out / 'weight_norms.png'}")
    return 0


# ----------------------------------------------------------------------------- attention


def _attention_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="drcl analyze attention", description="Grad-CAM maps, one column per checkpoint"
    )
    p.add_argument("--config", required=True, help="run config (model and data.val_*)")
    p.add_argument("--ckpt", nargs="+", required=True, metavar="NAME=CKPT", help="detector weights")
    p.add_argument("--images", nargs="+", required=True, type=int, help="image ids")
    p.add_argument("--out", required=True, help="folder for attention.png/.npz/.json")
    p.add_argument("--ann", help="annotation json holding the images (default data.val_ann)")
    p.add_argument("--image-dir", help="image folder (default data.val_images)")
    p.add_argument("--category-id", type=int, help="class to explain (default: largest object)")
    p.add_argument("--layer", default="backbone.fpn", help="'backbone.fpn[:level]' or a module")
    p.add_argument("--device", default="cpu")
    p.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="config overrides")
    return p


def _target_category(anns: list[dict], image_id: int, forced: int | None, source: str) -> int:
    """``forced``, else the category of the image's largest non-crowd object."""
    if forced is not None:
        return forced
    objects = [a for a in anns if not a.get("iscrowd", 0)]
    if not objects:
        raise ValueError(f"{source}: image {image_id} has no objects; pass --category-id")
    return int(max(objects, key=lambda a: a["bbox"][2] * a["bbox"][3])["category_id"])


def load_attention_inputs(ann_path: str, image_dir: str, ids: list[int], forced: int | None):
    """Images (3, H, W) in [0, 1] and their target labels 1..C; plus the number of classes."""
    from drcl.data.dataset import read_image_rgb

    data = read_json(ann_path)
    cat_ids = sorted(int(c["id"]) for c in data["categories"])
    images = {int(img["id"]): img for img in data["images"]}
    anns: dict[int, list[dict]] = {}
    for a in data["annotations"]:
        anns.setdefault(int(a["image_id"]), []).append(a)
    tensors, labels = [], []
    for iid in ids:
        if iid not in images:
            raise ValueError(f"{ann_path}: no image with id {iid}")
        cid = _target_category(anns.get(iid, []), iid, forced, ann_path)
        if cid not in cat_ids:
            raise ValueError(f"{ann_path}: category id {cid} is not one of its categories")
        tensors.append(read_image_rgb(Path(image_dir) / images[iid]["file_name"]))
        labels.append(cat_ids.index(cid) + 1)
    return tensors, labels, len(cat_ids)


def _load_detector(cfg: Any, num_classes: int, ckpt: str, device: str):
    from drcl.analysis.weight_norms import weights_file
    from drcl.detection.inference import load_detector_weights
    from drcl.detection.model import build_detector

    model = build_detector(cfg, num_classes)
    load_detector_weights(model, weights_file(ckpt))  # strict: names the mismatched keys
    return model.to(device).eval()


def _save_npz(path: Path, arrays: dict[str, np.ndarray]) -> None:
    def write(tmp: str) -> None:
        with open(tmp, "wb") as fh:  # a file object: numpy would append ".npz" to a str path
            np.savez_compressed(fh, **arrays)

    atomic_write(path, write)


def run_attention(ns: argparse.Namespace) -> int:
    import torch

    from drcl.analysis.attention import gradcam, plot_attention
    from drcl.config import load_config

    cfg = load_config(ns.config, ns.set)
    ann, image_dir = ns.ann or cfg.data.val_ann, ns.image_dir or cfg.data.val_images
    images, labels, num_classes = load_attention_inputs(ann, image_dir, ns.images, ns.category_id)
    runs = parse_named(ns.ckpt, "--ckpt")
    maps: dict[str, list[np.ndarray]] = {}
    for name, path in runs.items():
        model = _load_detector(cfg, num_classes, path, ns.device)
        maps[name] = [gradcam(model, im, lab, ns.layer) for im, lab in zip(images, labels)]
        del model
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    out = Path(ns.out)
    rows = [f"image {i} / label {lab}" for i, lab in zip(ns.images, labels)]
    plot_attention(images, maps, out / "attention.png", row_labels=rows)
    arrays = {f"{name}/{iid}": m for name, ms in maps.items() for iid, m in zip(ns.images, ms)}
    _save_npz(out / "attention.npz", arrays)
    meta = {"config": ns.config, "ckpt": runs, "images": ns.images, "labels": labels}
    atomic_write_json(out / "attention.json", meta | {"layer": ns.layer}, indent=2)
    print(f"wrote {out / 'attention.png'} ({len(images)} images x {len(runs)} checkpoints)")
    return 0


# ----------------------------------------------------------------------------- entry point

COMMANDS: dict[str, tuple[Callable[[], argparse.ArgumentParser], Callable[..., int]]] = {
    "errors": (_errors_parser, run_errors),
    "weight-norms": (_weight_norms_parser, run_weight_norms),
    "attention": (_attention_parser, run_attention),
}


def cli_analyze(args: argparse.Namespace) -> int:
    """``drcl analyze`` handler: ``args.what`` picks the analysis, ``args.rest`` its arguments."""
    if args.what not in COMMANDS:
        raise ValueError(f"analyze: unknown analysis {args.what!r}, allowed: {', '.join(COMMANDS)}")
    make_parser, run = COMMANDS[args.what]
    return run(make_parser().parse_args(list(args.rest or [])))
