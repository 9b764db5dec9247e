"""Long-tail statistics of a training json: counts per frequency group and COCO-LT bin, and a plot.

``drcl data stats train.json`` prints one table per grouping (group, #classes, #images,
#instances) and writes the long-tail curve (instances per class, sorted, log scale, bars coloured
by frequency group) as a PNG.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from drcl.data.coco import CocoIndex, unique_ints
from drcl.data.groups import (
    COMMON_MAX_IMAGES,
    FREQUENCY_GROUPS,
    GROUP_COLORS,
    GROUP_NAMES,
    LVIS_TRAIN_IMAGES,
    RARE_MAX_IMAGES,
    check_thresholds,
    empty_group_warning,
    scaled_rfs_threshold,
)
from drcl.utils.io import atomic_write

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class GroupRow:
    """One row of a statistics table.

    Attributes:
        group: ``'r' | 'c' | 'f'``, a COCO-LT bin ``'1'..'4'``, or ``'all'``.
        num_classes: classes in the group.
        num_images: images holding at least one instance of a class of the group.
        num_instances: annotations of classes of the group.
    """

    group: str
    num_classes: int
    num_images: int
    num_instances: int


def _table(index: CocoIndex, group_of_label: np.ndarray, names: list[str]) -> list[GroupRow]:
    """Rows for ``names`` (group g = ``names[g]``) plus ``'all'``.

    Args:
        group_of_label: (C + 1,) int group position of each label (entry 0 unused).
    """
    csr = index.image_labels()
    img_pos = np.repeat(np.arange(len(csr)), np.diff(csr.offsets))  # (M,) image of each instance
    groups = group_of_label[csr.labels]  # (M,)
    n = len(names)
    instances = np.bincount(groups, minlength=n)
    # images per group: unique (image, group) pairs
    images = np.bincount(unique_ints(img_pos * n + groups) % n, minlength=n)
    classes = np.bincount(group_of_label[1:], minlength=n)
    rows = [
        GroupRow(g, int(classes[k]), int(images[k]), int(instances[k])) for k, g in enumerate(names)
    ]
    total_images = len(unique_ints(img_pos))
    rows.append(GroupRow("all", index.num_classes, total_images, len(csr.labels)))
    return rows


def frequency_table(index: CocoIndex, groups: dict[int, str] | None = None) -> list[GroupRow]:
    """Rows r, c, f, all. ``groups`` defaults to ``index.frequency_groups()``."""
    groups = groups if groups is not None else index.frequency_groups()
    order = {g: k for k, g in enumerate(FREQUENCY_GROUPS)}
    of_label = np.zeros(index.num_classes + 1, np.int64)
    of_label[1:] = [order[groups[cid]] for cid in index.cat_ids]
    return _table(index, of_label, list(FREQUENCY_GROUPS))


def cocolt_table(index: CocoIndex) -> list[GroupRow]:
    """Rows for COCO-LT bins 1..4 (by this json's instance counts), then all; a row ``none``
    before ``all`` when some classes have no instance (they belong to no bin)."""
    bins = index.cocolt_bins()
    of_label = np.zeros(index.num_classes + 1, np.int64)
    of_label[1:] = [(bins[cid] or 5) - 1 for cid in index.cat_ids]
    rows = _table(index, of_label, ["1", "2", "3", "4", "none"])
    return [r for r in rows if r.group != "none" or r.num_classes]


def format_table(rows: list[GroupRow], title: str) -> str:
    """Fixed-width text table."""
    lines = [f"{title:<8} {'classes':>8} {'images':>8} {'instances':>10}"]
    for r in rows:
        lines.append(f"{r.group:<8} {r.num_classes:>8} {r.num_images:>8} {r.num_instances:>10}")
    return "\n".join(lines)


def plot_long_tail(
    index: CocoIndex, out_path: str | os.PathLike, groups: dict[int, str] | None = None
) -> Path:
    """Write the long-tail curve: instances per class, sorted descending, log y, coloured r/c/f.

    Returns:
        The PNG path (written atomically).
    """
    import matplotlib

    matplotlib.use("Agg")  # no display needed
    import matplotlib.pyplot as plt

    groups = groups if groups is not None else index.frequency_groups()
    counts = index.instance_counts()
    order = np.argsort(-counts, kind="stable")
    colours = [GROUP_COLORS[groups[index.cat_ids[k]]] for k in order]
    fig, ax = plt.subplots(figsize=(8, 3.5), dpi=100)
    ax.bar(np.arange(len(order)), np.maximum(counts[order], 0), width=1.0, color=colours)
    ax.set_yscale("log")
    ax.set_ylim(bottom=0.8)  # a class with 1 instance still shows a bar
    ax.set_xlim(-0.5, max(len(order), 1) - 0.5)
    ax.set_xlabel("class rank (sorted by training instances)")
    ax.set_ylabel("instances")
    ax.set_title(f"Long tail of {Path(index.path).name}: {index.num_classes} classes")
    handles = [plt.Rectangle((0, 0), 1, 1, color=GROUP_COLORS[g]) for g in FREQUENCY_GROUPS]
    ax.legend(handles, [GROUP_NAMES[g] for g in FREQUENCY_GROUPS], loc="upper right")
    fig.tight_layout()
    try:
        return atomic_write(out_path, lambda tmp: fig.savefig(tmp, format="png"))
    finally:
        plt.close(fig)


def default_plot_path(ann_path: str | os.PathLike) -> Path:
    """``train.json`` -> ``train_longtail.png`` next to it."""
    ann_path = Path(ann_path)
    return ann_path.with_name(f"{ann_path.stem}_longtail.png")


def write_stats(
    ann_path: str | os.PathLike,
    out_path: str | os.PathLike | None = None,
    echo: bool = True,
    rare_max: int = RARE_MAX_IMAGES,
    common_max: int = COMMON_MAX_IMAGES,
) -> tuple[str, Path]:
    """Tables (per frequency group and COCO-LT bin) and the long-tail PNG of a training json.

    A frequency group without classes is warned about, with thresholds to try
    (:func:`~drcl.data.groups.empty_group_warning`).

    Args:
        ann_path: training json.
        out_path: PNG path; ``None`` writes ``<stem>_longtail.png`` next to the json.
        echo: also print the text.
        rare_max, common_max: the LVIS rule's thresholds (``data.groups``).

    Returns:
        (the text, the PNG path).
    """
    check_thresholds(rare_max, common_max)
    index = CocoIndex.from_file(ann_path)
    groups = index.frequency_groups(rare_max=rare_max, common_max=common_max)
    n_json = sum(c.get("frequency") in FREQUENCY_GROUPS for c in index.categories)
    source = "LVIS rule on this json's image counts"
    if (rare_max, common_max) != (RARE_MAX_IMAGES, COMMON_MAX_IMAGES):
        source += f" (rare <= {rare_max}, common <= {common_max} images)"
    if n_json:
        source = "json 'frequency'" + (
            "" if n_json == index.num_classes else f" ({n_json}), {source}"
        )
    text = "\n".join(
        [
            f"{ann_path}: {len(index.image_ids)} images, {index.num_classes} classes",
            f"frequency groups from {source}",
            format_table(frequency_table(index, groups), "group"),
            "",
            format_table(cocolt_table(index), "coco-lt"),
        ]
    )
    warning = empty_group_warning(
        index.image_counts(),
        list(groups.values()),
        rare_max,
        common_max,
        len(index.image_ids),
    )
    if warning:
        text += f"\nwarning: {warning}"
    t = scaled_rfs_threshold(len(index.image_ids))
    text += (
        f"\nRFS threshold for {len(index.image_ids)} images: finetune.rfs_threshold="
        f"{t:.3g} pretrain.drb.threshold={t:.3g} (LVIS's 1e-3 x {LVIS_TRAIN_IMAGES} / "
        f"{len(index.image_ids)}: the repeat factors LVIS gives the same image counts)"
    )
    if echo:
        log.info("%s", text)
    out = plot_long_tail(index, out_path or default_plot_path(ann_path), groups)
    if echo:
        log.info("wrote %s", out)
    return text, out
