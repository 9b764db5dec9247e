"""The report's pictures of what the detectors find: a detection gallery, per-class AP against
training instances, and the ablation's forest plot.

- **Gallery**: a fixed, seeded choice of validation images holding the rarest classes; ground
  truth beside each run's detections above :data:`GALLERY_SCORE_THR`, boxes coloured by
  frequency group and labelled, the same images for every run.
- **Per-class AP**: one point per (class, run), x = training instances (log), y = box AP,
  coloured by frequency group, one marker per run (the standard long-tail picture).
- **Forest plot**: the ablation's paired differences to the baseline with their 95% intervals,
  one panel per metric.

Each builder returns the section's blocks; missing inputs give a "not available" note.
"""

from __future__ import annotations

import functools
import math
from pathlib import Path
from typing import Any

import numpy as np

from drcl.data.groups import GROUP_COLORS, GROUP_NAMES
from drcl.report.doc import Figure, Note
from drcl.report.figures import _failed
from drcl.report.runs import RunInfo, metrics_scale
from drcl.utils.run_dir import RunDir

GALLERY_IMAGES = 4
GALLERY_SEED = 0
GALLERY_SCORE_THR = 0.3  # detections drawn; the results keep everything above 1e-4
GALLERY_MAX_BOXES = 15  # per panel, highest scores first: more hides the image
GROUP_ORDER = ("r", "c", "f")  # rarest first
UNKNOWN_COLOR = "#1f77b4"
RUN_MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*")


def _index(path: Path):
    """A loaded annotation file (cached while the file is unchanged: sections share it)."""
    stat = Path(path).stat()
    return _cached_index(Path(path).resolve(), stat.st_mtime_ns, stat.st_size)


@functools.lru_cache(maxsize=4)
def _cached_index(path: Path, mtime_ns: int, size: int):
    from drcl.data.coco import load_coco

    return load_coco(path)


def class_groups(gt: Path, train_ann: Path | None) -> dict[int, str]:
    """``{category id: 'r'|'c'|'f'}``: from the training json (LVIS rule or its ``frequency``),
    else from the ground truth's ``frequency`` field."""
    if train_ann is not None:
        return _index(train_ann).frequency_groups()
    return _index(gt).frequency_groups(use_json=True)


def choose_gallery_images(
    anns_by_image: dict[int, list[dict]],
    groups: dict[int, str],
    k: int = GALLERY_IMAGES,
    seed: int = GALLERY_SEED,
) -> list[int]:
    """``k`` image ids, those holding a rare-class object first, then common, then frequent.

    An image's rank is the rarest group among its objects; within a rank the order is a seeded
    permutation of the sorted ids, so the choice depends only on the annotations and ``seed``.
    """
    by_rank: dict[int, list[int]] = {}
    for iid, anns in anns_by_image.items():
        ranks = [GROUP_ORDER.index(groups[a["category_id"]]) for a in anns
                 if groups.get(a["category_id"]) in GROUP_ORDER]  # fmt: skip
        if ranks:
            by_rank.setdefault(min(ranks), []).append(int(iid))
    rng = np.random.default_rng(seed)
    chosen: list[int] = []
    for rank in sorted(by_rank):
        ids = sorted(by_rank[rank])
        chosen += [ids[j] for j in rng.permutation(len(ids))][: k - len(chosen)]
        if len(chosen) >= k:
            break
    return chosen


def _color(group: str | None) -> str:
    return GROUP_COLORS.get(group or "", UNKNOWN_COLOR)


def _draw_boxes(ax, boxes: list[tuple[list[float], str, str | None]]) -> None:
    """``(xywh, label, group)`` rectangles with their label on a group-coloured background."""
    from matplotlib.patches import Rectangle

    for (x, y, w, h), label, group in boxes:
        c = _color(group)
        ax.add_patch(Rectangle((x, y), w, h, fill=False, edgecolor=c, linewidth=1.2))
        ax.text(x, y, label, fontsize=5, color="white", va="bottom", ha="left",
                bbox={"facecolor": c, "edgecolor": "none", "pad": 0.5, "alpha": 0.85})  # fmt: skip


def _load_image(path: Path) -> np.ndarray:
    from PIL import Image, ImageOps

    with Image.open(path) as pil:
        return np.asarray(ImageOps.exif_transpose(pil).convert("RGB"))


def _detections_by_image(path: Path, image_ids: set[int]) -> dict[int, list[dict]]:
    from drcl.utils.io import read_json

    out: dict[int, list[dict]] = {i: [] for i in image_ids}
    for rec in read_json(path):
        if int(rec["image_id"]) in out and float(rec["score"]) >= GALLERY_SCORE_THR:
            out[int(rec["image_id"])].append(rec)
    for recs in out.values():
        recs.sort(key=lambda r: -float(r["score"]))
        del recs[GALLERY_MAX_BOXES:]
    return out


def plot_gallery(
    images: list[np.ndarray],
    columns: dict[str, list[list[tuple[list[float], str, str | None]]]],
    out_png: Path,
) -> Path:
    """Rows = images, columns = ``{title: boxes per image}`` (ground truth first)."""
    from matplotlib.patches import Patch

    from drcl.analysis.plotting import new_figure, save_figure

    fig = new_figure(2.2 * len(columns), 2.2 * len(images) + 0.4)
    axes = fig.subplots(len(images), len(columns), squeeze=False)
    for c, (title, per_image) in enumerate(columns.items()):
        axes[0, c].set_title(title, fontsize=8)
        for r, image in enumerate(images):
            ax = axes[r, c]
            ax.imshow(image)
            _draw_boxes(ax, per_image[r])
            if c > 0 and not per_image[r]:  # an empty panel is a result, not a missing file
                ax.text(0.5, 0.02, f"no detection >= {GALLERY_SCORE_THR}", fontsize=6,
                        transform=ax.transAxes, ha="center", va="bottom", color="white",
                        bbox={"facecolor": "black", "alpha": 0.6, "pad": 1})  # fmt: skip
            ax.set_xticks([])
            ax.set_yticks([])
    handles = [Patch(color=GROUP_COLORS[g], label=GROUP_NAMES[g]) for g in GROUP_ORDER]
    fig.legend(handles=handles, loc="outside upper center", ncol=3, fontsize=7, frameon=False)
    return save_figure(fig, out_png)


def gallery_section(
    runs: list[RunInfo], gt: Path | None, train_ann: Path | None, out_dir: Path
) -> list[Figure | Note]:
    """Ground truth and each run's detections on the same seeded choice of val images."""
    have = [r for r in runs if RunDir(r.path).detections().exists()]
    if not have:
        return [Note("no run has eval/detections_bbox.json")]
    if gt is None:
        return [Note("no ground truth (pass gt, or data.val_ann in config.yaml)")]
    image_dir = next((p for r in runs if (p := r.config_path("data.val_images"))), None)
    if image_dir is None or not image_dir.is_dir():
        return [Note("no image folder (data.val_images in the runs' config.yaml)")]
    try:
        return _gallery(have, gt, train_ann, image_dir, out_dir)
    except (OSError, ValueError, KeyError, TypeError) as err:
        return [_failed("detection gallery", err)]


def _gallery(
    runs: list[RunInfo], gt: Path, train_ann: Path | None, image_dir: Path, out_dir: Path
) -> list[Figure | Note]:
    from drcl.data.paths import image_path

    index, groups = _index(gt), class_groups(gt, train_ann)
    names = {int(c["id"]): str(c.get("name", c["id"])) for c in index.categories}
    ids = choose_gallery_images(index.anns_by_image, groups)
    if not ids:
        return [Note(f"{gt}: no image with an object of a known frequency group")]
    images = [_load_image(image_path(image_dir, index.images[i], f"image {i}")) for i in ids]
    gt_boxes = [[(a["bbox"], names[a["category_id"]], groups.get(a["category_id"]))
                 for a in index.anns_by_image[i]] for i in ids]  # fmt: skip
    columns = {"ground truth": gt_boxes}
    for run in runs:
        dets = _detections_by_image(RunDir(run.path).detections(), set(ids))
        columns[run.name] = [
            [(d["bbox"], f"{names.get(int(d['category_id']), d['category_id'])} "
              f"{float(d['score']):.2f}", groups.get(int(d["category_id"]))) for d in dets[i]]
            for i in ids
        ]  # fmt: skip
    plot_gallery(images, columns, out_dir / "gallery.png")
    caption = (
        f"{len(ids)} val images holding the rarest classes (seed {GALLERY_SEED}, the same for "
        f"every run): ground truth, then each run's detections with score >= "
        f"{GALLERY_SCORE_THR} (at most {GALLERY_MAX_BOXES}); boxes coloured by frequency group "
        "(rare red, common orange, frequent green)"
    )
    return [Figure("gallery.png", caption)]


# ---- per-class AP against training instances ---------------------------------------------------


def per_class_points(
    run: RunInfo, counts: dict[int, int] | None, groups: dict[int, str] | None
) -> list[tuple[int, int, float, str | None]]:
    """``(class id, training instances, box AP in percent, group)`` of a run's classes.

    Counts come from the eval file's ``train_instances``, else from ``counts``; classes
    without AP (no ground truth) or without a positive count (log axis) are left out.
    """
    metrics = run.evals.get("bbox", {})
    scale = metrics_scale(metrics)
    points = []
    for c in metrics.get("per_class") or []:
        cid, ap = int(c["id"]), c.get("AP")
        n = c.get("train_instances")
        n = (counts or {}).get(cid) if n is None else n
        if not isinstance(ap, int | float) or not math.isfinite(ap) or ap < 0 or not n:
            continue
        group = c.get("group") or (groups or {}).get(cid)
        points.append((cid, int(n), float(ap) * scale, group))
    return points


def per_class_ap_section(
    runs: list[RunInfo], train_ann: Path | None, out_dir: Path
) -> list[Figure | Note]:
    """Box AP of every class against its training instances (log x), per run and group."""
    counts = groups = None
    if train_ann is not None:
        try:
            index = _index(train_ann)
            counts = index.counts_by_cat_id(index.instance_counts())
            groups = index.frequency_groups()
        except (OSError, ValueError):
            pass  # the long-tail section says why; eval files may carry the counts
    points = {r.name: p for r in runs if (p := per_class_points(r, counts, groups))}
    if not points:
        return [Note("no run's eval/metrics_bbox.json has per_class AP with training counts")]
    try:
        plot_per_class_ap(points, out_dir / "per_class_ap.png")
    except (OSError, ValueError) as err:
        return [_failed("per-class AP plot", err)]
    caption = (
        "Box AP per class against its training instances (log scale), one point per class and "
        f"run ({', '.join(f'{m} {n}' for n, m in zip(points, RUN_MARKERS, strict=False))}), "
        "coloured by frequency group"
    )
    return [Figure("per_class_ap.png", caption)]


def plot_per_class_ap(
    points: dict[str, list[tuple[int, int, float, str | None]]], out_png: Path
) -> Path:
    """The scatter of :func:`per_class_ap_section`; marker per run, colour per group."""
    from matplotlib.lines import Line2D

    from drcl.analysis.plotting import new_figure, save_figure

    fig = new_figure(7.0, 4.2)
    ax = fig.add_subplot()
    for pts, marker in zip(points.values(), RUN_MARKERS, strict=False):
        ax.scatter([p[1] for p in pts], [p[2] for p in pts], c=[_color(p[3]) for p in pts],
                   marker=marker, s=28, alpha=0.8, edgecolors="black", linewidths=0.3)  # fmt: skip
    ax.set_xscale("log")
    ax.set_xlabel("training instances (log)")
    ax.set_ylabel("box AP (%)")
    ax.grid(alpha=0.3)
    handles = [Line2D([], [], marker=m, ls="", color="grey", label=n)
               for n, m in zip(points, RUN_MARKERS, strict=False)]  # fmt: skip
    handles += [Line2D([], [], marker="o", ls="", color=GROUP_COLORS[g], label=GROUP_NAMES[g])
                for g in GROUP_ORDER]  # fmt: skip
    ax.legend(handles=handles, fontsize=7, loc="upper left")
    return save_figure(fig, out_png)


# ---- ablation forest plot ----------------------------------------------------------------------


def forest_rows(
    results: dict[str, Any], metric: str
) -> list[tuple[str, float, tuple[float, float] | None]]:
    """``(row, mean difference, 95% interval or None)`` for one metric, in the rows' order."""
    out = []
    for name, entry in results.get("rows", {}).items():
        d = (entry.get("diff_vs_baseline") or {}).get(metric) or {}
        if d.get("mean") is None:
            continue
        ci = d.get("ci95")
        out.append((name, float(d["mean"]), None if ci is None else (float(ci[0]), float(ci[1]))))
    return out


def forest_section(results: dict[str, Any], out_dir: Path) -> list[Figure]:
    """The forest plot of the ablation's paired differences; nothing without differences."""
    from drcl.ablation.results import METRICS

    panels = {m: rows for m in METRICS if (rows := forest_rows(results, m))}
    if not panels:
        return []
    plot_forest(panels, out_dir / "ablation_forest.png")
    caption = (
        f"Paired difference to {results.get('baseline')} (AP points, mean over seeds) with its "
        "95% interval, one panel per metric; dark: the interval excludes 0"
    )
    return [Figure("ablation_forest.png", caption)]


def plot_forest(
    panels: dict[str, list[tuple[str, float, tuple[float, float] | None]]], out_png: Path
) -> Path:
    """One panel per metric: a point per row at its mean, its interval as a line, 0 marked."""
    from drcl.analysis.plotting import new_figure, save_figure
    from drcl.evaluation.compare import excludes_zero

    names = list(dict.fromkeys(n for rows in panels.values() for n, _, _ in rows))
    fig = new_figure(2.3 * len(panels) + 1.0, 0.45 * len(names) + 1.2)
    axes = fig.subplots(1, len(panels), sharey=True, squeeze=False)[0]
    for ax, (metric, rows) in zip(axes, panels.items(), strict=True):
        ax.axvline(0.0, color="grey", lw=0.8, ls="--")
        for name, mean, ci in rows:
            y = names.index(name)
            color = "#1a1a1a" if excludes_zero(ci) else "#9e9e9e"
            if ci is not None:
                ax.plot(ci, [y, y], color=color, lw=1.6)
            ax.plot([mean], [y], "o", color=color, ms=5)
        ax.set_title(f"Δ{metric}", fontsize=9)
        ax.set_xlabel("AP points", fontsize=8)
        ax.grid(axis="x", alpha=0.3)
    axes[0].set_yticks(range(len(names)), names, fontsize=8)
    axes[0].invert_yaxis()  # first row at the top, as in the table
    return save_figure(fig, out_png)
