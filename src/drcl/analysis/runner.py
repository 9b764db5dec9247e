"""The analysis runners: error breakdown, classifier weight norms, Grad-CAM attention maps.

``drcl analyze`` (``drcl.analysis.cli``) parses arguments and calls these; ``drcl demo`` calls
:func:`run_attention` directly. A fine-tuning run dir stands for its
``eval/detections_bbox.json`` (errors).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from drcl.data.paths import image_path
from drcl.utils.io import atomic_write, atomic_write_json, read_json
from drcl.utils.run_dir import EVAL, RunDir, detections_name, read_metrics

if TYPE_CHECKING:
    import torch

    from drcl.analysis.job import AttentionJob
    from drcl.pretrain.job import PretrainJob

log = logging.getLogger(__name__)

RUN_DIR_DETECTIONS = Path(EVAL) / detections_name("bbox")


def _detections_path(path: str) -> str:
    p = Path(path)
    return str(p / RUN_DIR_DETECTIONS) if p.is_dir() else path


def run_errors(
    gt: str,
    runs: dict[str, str],
    out: str | Path,
    train_ann: str | None = None,
    t_f: float = 0.5,
    t_b: float = 0.1,
    max_dets: int = 300,
    min_score: float = 0.0,
) -> dict[str, Any]:
    """Error breakdown per frequency group of each named detections file (or fine-tuning run
    dir) into ``out/errors.json`` and ``errors.png``; returns the results per run."""
    from drcl.analysis.errors import error_breakdown, format_error_table, plot_error_breakdown

    results = {}
    for name, path in runs.items():
        results[name] = error_breakdown(
            gt, _detections_path(path), train_ann, t_f, t_b, max_dets, min_score
        )
    out = Path(out)
    meta = {"gt": gt, "dets": runs, "train_ann": train_ann}
    atomic_write_json(out / "errors.json", {"inputs": meta, "runs": results}, indent=2)
    plot_error_breakdown(results, out / "errors.png")
    log.info("%s", format_error_table(results))
    log.info("wrote %s and %s", out / "errors.json", out / "errors.png")
    return results


def training_classes(train_ann: str) -> list[dict[str, Any]]:
    """Per class in label order 1..C: id, name, training instances and frequency group."""
    from drcl.analysis.errors import category_groups
    from drcl.data.groups import class_counts

    train = read_json(train_ann)
    if not isinstance(train, dict) or not isinstance(train.get("categories"), list):
        raise ValueError(f"{train_ann}: top-level 'categories' missing or not a list")
    cats = sorted(train["categories"], key=lambda c: int(c["id"]))
    ids = [int(c["id"]) for c in cats]
    known = set(ids)
    for k, ann in enumerate(train.get("annotations", [])):
        cid = ann.get("category_id") if isinstance(ann, dict) else None
        if cid not in known:
            raise ValueError(
                f"{train_ann}: annotation {k}: unknown or missing 'category_id' {cid!r}"
            )
    groups = category_groups(cats, train)
    instances = class_counts(train)[1]
    return [
        {
            "id": cid,
            "name": c.get("name", str(cid)),
            "instances": instances[cid],
            "group": groups[cid],
        }
        for cid, c in zip(ids, cats, strict=True)
    ]


def run_weight_norms(runs: dict[str, str], train_ann: str, out: str | Path) -> dict[str, Any]:
    """Classifier weight norm per class of each named checkpoint into
    ``out/weight_norms.json`` and ``.png``; returns the summary per run."""
    from drcl.analysis.weight_norms import classifier_weight_norms, group_means, plot_weight_norms

    classes = training_classes(train_ann)
    groups = [c["group"] for c in classes]
    norms = {name: classifier_weight_norms(path, len(classes)) for name, path in runs.items()}
    out = Path(out)
    summary = {
        name: {"group_means": group_means(n, groups), "norms": n.tolist()}
        for name, n in norms.items()
    }
    payload = {"inputs": {"ckpt": runs, "train_ann": train_ann}, "classes": classes}
    atomic_write_json(out / "weight_norms.json", payload | {"runs": summary}, indent=2)
    counts = np.array([c["instances"] for c in classes])
    plot_weight_norms(norms, counts, groups, out / "weight_norms.png")
    lines = [f"{'run':<20} {'rare':>8} {'common':>8} {'frequent':>8}   (mean ||w_c||)"]
    for name, s in summary.items():
        means = " ".join(f"{s['group_means'].get(g, float('nan')):8.3f}" for g in "rcf")
        lines.append(f"{name[:20]:<20} {means}")
    log.info("%s", "\n".join(lines))
    log.info("wrote %s and %s", out / "weight_norms.json", out / "weight_norms.png")
    return summary


def _target_category(anns: list[dict], image_id: int, forced: int | None, source: str) -> int:
    """``forced``, else the category of the image's largest non-crowd object."""
    if forced is not None:
        return forced
    objects = [a for a in anns if not a.get("iscrowd", 0)]
    if not objects:
        raise ValueError(f"{source}: image {image_id} has no objects; pass --category-id")
    return int(max(objects, key=lambda a: a["bbox"][2] * a["bbox"][3])["category_id"])


def load_attention_inputs(ann_path: str, image_dir: str, ids: list[int], forced: int | None):
    """Images (3, H, W) in [0, 1] and the category id to explain on each (ids, not labels:
    each checkpoint maps them to its own labels, :func:`attention_labels`)."""
    from drcl.data.dataset import read_image_rgb

    data = read_json(ann_path)
    cat_ids = {int(c["id"]) for c in data["categories"]}
    images = {int(img["id"]): img for img in data["images"]}
    anns: dict[int, list[dict]] = {}
    for a in data["annotations"]:
        anns.setdefault(int(a["image_id"]), []).append(a)
    tensors, categories = [], []
    for iid in ids:
        if iid not in images:
            raise ValueError(f"{ann_path}: no image with id {iid}")
        cid = _target_category(anns.get(iid, []), iid, forced, ann_path)
        if cid not in cat_ids:
            raise ValueError(f"{ann_path}: category id {cid} is not one of its categories")
        tensors.append(read_image_rgb(image_path(image_dir, images[iid], f"image {iid}")))
        categories.append(cid)
    return tensors, categories


def attention_labels(ckpt: str, ann_path: str, cat_ids: list[int]) -> tuple[list[int], int]:
    """The checkpoint's labels of ``cat_ids`` and its number of classes, through its category
    record (:func:`~drcl.data.categories.categories_for_checkpoint`); a checkpoint without one
    takes ``ann_path``'s categories, with a warning."""
    from drcl.analysis.weight_norms import weights_file
    from drcl.data.categories import CategoryTable, categories_for_checkpoint

    table = categories_for_checkpoint(weights_file(ckpt))
    if table is None:
        log.warning(
            "%s: no category record; its labels are taken as %s's categories in id order",
            ckpt,
            ann_path,
        )
        table = CategoryTable.from_coco(ann_path)
    by_id = table.by_id()
    missing = [c for c in cat_ids if c not in by_id]
    if missing:
        raise ValueError(
            f"{ckpt}: category id {missing[0]} is not one of the model's training categories "
            f"({table.source or 'its record'})"
        )
    return [by_id[c].label for c in cat_ids], table.num_classes


def _load_detector(job: AttentionJob, num_classes: int, ckpt: str) -> torch.nn.Module:
    from drcl.analysis.weight_norms import weights_file
    from drcl.detection.inference import load_detector_weights
    from drcl.finetune.runner import detector_for

    model = detector_for(job, num_classes)
    load_detector_weights(model, weights_file(ckpt))  # strict: names the mismatched keys
    return model.to(job.device).eval()


def _save_npz(path: Path, arrays: dict[str, np.ndarray]) -> None:
    def write(tmp: str) -> None:
        with open(tmp, "wb") as fh:  # a file object: numpy would append ".npz" to a str path
            np.savez_compressed(fh, **arrays)

    atomic_write(path, write)


def run_attention(job: AttentionJob) -> Path:
    """Grad-CAM maps of each of ``job.runs`` on ``job.image_ids`` of ``job.ann`` into
    ``job.out/attention.png/.npz/.json``; returns the png path."""
    import torch

    from drcl.analysis.attention import gradcam, plot_attention

    runs, image_ids, layer = job.runs, list(job.image_ids), job.layer
    images, cat_ids = load_attention_inputs(job.ann, job.image_dir, image_ids, job.category_id)
    maps: dict[str, list[np.ndarray]] = {}
    first_labels: list[int] = []
    for name, path in runs.items():
        labels, num_classes = attention_labels(path, job.ann, cat_ids)
        first_labels = first_labels or labels
        model = _load_detector(job, num_classes, path)
        maps[name] = [
            gradcam(model, im, lab, layer) for im, lab in zip(images, labels, strict=True)
        ]
        del model
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    out = job.out
    rows = [f"image {i} / category {c}" for i, c in zip(image_ids, cat_ids, strict=True)]
    plot_attention(images, maps, out / "attention.png", row_labels=rows)
    arrays = {
        f"{name}/{iid}": m
        for name, ms in maps.items()
        for iid, m in zip(image_ids, ms, strict=True)
    }
    _save_npz(out / "attention.npz", arrays)
    meta = {
        "config": job.config_name,
        "ckpt": runs,
        "images": image_ids,
        "category_ids": cat_ids,
        "labels": first_labels,  # of the first checkpoint
    }
    atomic_write_json(out / "attention.json", meta | {"layer": layer}, indent=2)
    log.info("wrote %s (%d images x %d checkpoints)", out / "attention.png", len(images), len(runs))
    return out / "attention.png"


# ----------------------------------------------------------------------------- box composition


def simulate_box_composition(
    job: PretrainJob, interval: int | None = None
) -> list[dict[str, float]]:
    """Replay the pre-training sampler and box selection of ``job`` over its whole schedule.

    The same draws as training (same seeds), counted before the random crops drop boxes, without
    a model: seconds instead of a training run.

    Args:
        job: a pre-training job; ``source=gt`` proposals are written to its ``work_dir`` (as
            ``drcl pretrain`` does).
        interval: iterations per row; default ``train.log_every``.

    Returns:
        one row per interval: ``iter`` (last iteration of the interval), ``alpha`` (of that
        iteration) and the :func:`~drcl.pretrain.box_composition.composition` keys.
    """
    from drcl.engine.distributed import DistInfo
    from drcl.pretrain.box_composition import BoxCompositionMeter, label_groups
    from drcl.pretrain.loop import build_pretrain_data

    # the training stream itself, without images: the same sampler, schedule and box draws
    data = build_pretrain_data(
        job.data, job.train, job.pretrain, job.work_dir, DistInfo(), labels_only=True
    )
    interval = interval or job.train.log_every
    meter = BoxCompositionMeter(label_groups(data.dataset.index))
    rows, max_iters = [], data.schedule.max_iters
    for batch in data.batches():
        meter.update(batch.labels)
        if data.position % data.schedule.accumulate:
            continue
        done = data.iteration
        if done % interval == 0 or done == max_iters:
            rows.append({"iter": done, "alpha": data.alpha(), **meter.summary()})
        if done == max_iters:
            break
    return rows


def simulate_variants(
    config: str | None, overrides: list[str], work_dir: str | Path, interval: int | None
) -> dict[str, list[dict[str, float]]]:
    """:func:`simulate_box_composition` for each of the figure's variants (uniform, image-level
    RFS, DRB: :data:`drcl.analysis.box_composition.VARIANTS`) on top of ``config``."""
    from drcl.analysis.box_composition import VARIANTS
    from drcl.config import load_config
    from drcl.pretrain.job import PretrainJob

    out = {}
    for i, (name, extra) in enumerate(VARIANTS.items()):
        cfg = load_config(config, [*overrides, *extra])
        job = PretrainJob.from_config(cfg, Path(work_dir) / f"variant{i}")
        out[name] = simulate_box_composition(job, interval)
    return out


def run_box_composition(
    runs: dict[str, str],
    out: str | Path,
    simulate: str | None = None,
    overrides: list[str] | None = None,
    interval: int | None = None,
) -> dict[str, list[dict[str, float]]]:
    """The mechanism figure: box composition of pre-training runs and/or simulated variants.

    Args:
        runs: ``{name: pre-training run dir}`` (their ``metrics.jsonl``).
        out: PNG path; the rows go to the same name ``.json``.
        simulate: a pre-training config to replay for the three variants (no training).
        overrides: ``key=value`` overrides of ``simulate``.
        interval: iterations per simulated point (default ``train.log_every``).
    """
    from drcl.analysis.box_composition import plot_box_composition, rows_from_metrics

    if not runs and not simulate:
        raise ValueError("analyze box-composition: give run folders or --simulate CONFIG")
    rows: dict[str, list[dict[str, float]]] = {}
    for name, path in runs.items():
        metrics = RunDir(path).metrics
        if not metrics.is_file():
            raise ValueError(f"run {name!r}: {metrics} does not exist")
        rows[name] = rows_from_metrics(read_metrics(metrics))
        if not rows[name]:
            raise ValueError(f"run {name!r}: {metrics} has no box_share_* rows (not pre-training?)")
    out = Path(out)
    if simulate:
        work = out.with_name(f"{out.stem}.simulation")
        rows |= simulate_variants(simulate, list(overrides or []), work, interval)
    plot_box_composition(rows, out)
    atomic_write_json(out.with_suffix(".json"), {"runs": rows}, indent=1)
    for name, rs in rows.items():
        mean = {g: np.nanmean([r[f"box_share_{g}"] for r in rs]) for g in "rcf"}
        ent = np.nanmean([r["box_entropy"] for r in rs])
        log.info(
            "%-32s rare %6.1f%% common %6.1f%% frequent %6.1f%% entropy %.3f",
            name[:32],
            100 * mean["r"],
            100 * mean["c"],
            100 * mean["f"],
            ent,
        )
    log.info("wrote %s and %s", out, out.with_suffix(".json"))
    return rows
