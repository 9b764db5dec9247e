"""``drcl analyze errors | weight-norms | attention | box-composition | probe``: each parses its
own arguments and calls its runner (:mod:`drcl.analysis.runner`, :mod:`drcl.analysis.probe`).

Runs are named on the command line as ``NAME=PATH`` (``baseline=work/ft_base``); a bare path
is named after its file or folder. A fine-tuning run dir stands for its
``eval/detections_bbox.json`` (errors) or ``model_final.safetensors`` (weight norms, attention).
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path

from drcl.utils.io import refuse_overwriting_inputs


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


# ----------------------------------------------------------------------------- weight norms


def _weight_norms_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="drcl analyze weight-norms", description="classifier weight norm per class"
    )
    p.add_argument("--ckpt", nargs="+", required=True, metavar="NAME=CKPT", help="detector weights")
    p.add_argument("--train-ann", required=True, help="training json (class counts and groups)")
    p.add_argument("--out", required=True, help="folder for weight_norms.json and .png")
    return p


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
    p.add_argument("--device", default="cpu", help="torch device (default cpu)")
    p.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="config overrides")
    return p


# ----------------------------------------------------------------------------- box composition


def _box_composition_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="drcl analyze box-composition",
        description="class composition of the boxes LCL contrasts over training (r/c/f shares "
        "and normalised entropy), runs side by side",
    )
    p.add_argument("runs", nargs="*", metavar="NAME=RUN_DIR", help="pre-training run folders")
    p.add_argument(
        "--simulate",
        metavar="CONFIG",
        help="replay the sampler + box selection of this pre-training config for uniform, "
        "image-level RFS and DRB (no training)",
    )
    p.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="config overrides")
    p.add_argument("--interval", type=int, help="iterations per point (default train.log_every)")
    p.add_argument("--out", required=True, help="PNG path; the rows go to the same name .json")
    return p


# ----------------------------------------------------------------------------- probe


def _probe_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="drcl analyze probe",
        description="crop probe: nearest class mean and weighted kNN on ground-truth box crops, "
        "accuracy per frequency group, collapse monitors; no fine-tuning",
    )
    p.add_argument(
        "--weights",
        action="append",
        required=True,
        metavar="NAME=W",
        help="'random', a ResNet / generic backbone file, a pretrained.safetensors or a detector; "
        "repeat for several",
    )
    p.add_argument("--config", help="config whose data.* (train, val) and model.* fill the rest")
    p.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="config overrides")
    p.add_argument("--train-ann", help="json the classifiers are fitted on (and groups from)")
    p.add_argument("--train-images", help="its image folder")
    p.add_argument("--eval-ann", help="json read out (tune or val)")
    p.add_argument("--eval-images", help="its image folder")
    p.add_argument("--out", required=True, help="JSON file for the results (written atomically)")
    p.add_argument("--readouts", default="C4,C5", help="comma list of C2..C5, roi (default C4,C5)")
    p.add_argument("--classifiers", default="ncm,knn", help="comma list of ncm, knn")
    p.add_argument("--size", type=int, default=64, help="crop side, px (default 64)")
    p.add_argument("--context", type=float, default=0.1, help="margin per side (default 0.1)")
    p.add_argument("--k", type=int, default=20, help="kNN neighbours (default 20)")
    p.add_argument("--temperature", type=float, default=0.07, help="kNN T (default 0.07)")
    p.add_argument("--depth", type=int, help="ResNet depth of 'random' (default model.depth or 18)")
    p.add_argument("--fpn-channels", type=int, help="FPN width of 'random' (roi readout)")
    p.add_argument("--box-head-dim", type=int, help="box head width of 'random' (roi readout)")
    p.add_argument("--seed", type=int, default=0, help="seed of the random init (default 0)")
    p.add_argument("--cache-dir", help="keep the crops here and reuse them")
    p.add_argument(
        "--max-per-class", type=int, default=0, help="at most N boxes of a class (0 = all)"
    )
    return p


# ----------------------------------------------------------------------------- entry point


def _refuse_inputs(out: str, inputs: dict) -> None:
    """An output that is one of the inputs is refused before any work. (An input inside the
    output folder is fine: the analyses write new names into it, they do not replace it.)"""
    refuse_overwriting_inputs(out, inputs, "--out")


def _errors(ns: argparse.Namespace) -> None:
    from drcl.analysis.runner import run_errors

    runs = parse_named(ns.dets, "--dets")
    _refuse_inputs(ns.out, {"--gt": ns.gt, "--train-ann": ns.train_ann, **runs})
    run_errors(ns.gt, runs, ns.out, ns.train_ann, ns.t_f, ns.t_b, ns.max_dets, ns.min_score)


def _weight_norms(ns: argparse.Namespace) -> None:
    from drcl.analysis.runner import run_weight_norms

    ckpts = parse_named(ns.ckpt, "--ckpt")
    _refuse_inputs(ns.out, {"--train-ann": ns.train_ann, **ckpts})
    run_weight_norms(ckpts, ns.train_ann, ns.out)


def _attention(ns: argparse.Namespace) -> None:
    from drcl.analysis.job import AttentionJob
    from drcl.analysis.runner import run_attention
    from drcl.config import load_config

    inputs = {"--config": ns.config, "--ann": ns.ann, "--image-dir": ns.image_dir}
    _refuse_inputs(ns.out, {**inputs, **parse_named(ns.ckpt, "--ckpt")})
    job = AttentionJob.from_config(
        load_config(ns.config, ns.set),
        parse_named(ns.ckpt, "--ckpt"),
        ns.images,
        ns.out,
        ann=ns.ann,
        image_dir=ns.image_dir,
        category_id=ns.category_id,
        layer=ns.layer,
        device=ns.device,
        config_name=ns.config,
    )
    run_attention(job)


def _box_composition(ns: argparse.Namespace) -> None:
    from drcl.analysis.runner import run_box_composition

    runs = parse_named(ns.runs, "runs")
    json_twin = str(Path(ns.out).with_suffix(".json"))
    for out in (ns.out, json_twin):
        refuse_overwriting_inputs(out, runs, "--out")
    run_box_composition(runs, ns.out, ns.simulate, ns.set, ns.interval)


def _probe(ns: argparse.Namespace) -> None:
    from drcl.analysis.probe import run_probe_cli

    run_probe_cli(ns, parse_named(ns.weights, "--weights"))


COMMANDS: dict[str, tuple[Callable[[], argparse.ArgumentParser], Callable[..., None]]] = {
    "errors": (_errors_parser, _errors),
    "weight-norms": (_weight_norms_parser, _weight_norms),
    "attention": (_attention_parser, _attention),
    "box-composition": (_box_composition_parser, _box_composition),
    "probe": (_probe_parser, _probe),
}


def cli_analyze(args: argparse.Namespace) -> int:
    """``drcl analyze`` handler: ``args.what`` picks the analysis, ``args.rest`` its arguments."""
    if args.what not in COMMANDS:
        raise ValueError(f"analyze: unknown analysis {args.what!r}, allowed: {', '.join(COMMANDS)}")
    make_parser, run = COMMANDS[args.what]
    run(make_parser().parse_args(list(args.rest or [])))
    return 0
