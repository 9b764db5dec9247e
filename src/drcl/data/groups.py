"""Class-frequency groups, defined once: LVIS r/c/f, COCO-LT bins, their names and colours.

LVIS (Gupta et al., CVPR 2019, Sec. 4) groups classes by the number of *training images* that
contain them: rare 1-10, common 11-100, frequent > 100 (a class absent from training counts as
rare: it is the rarest possible). COCO-LT (Tan et al., 2020) bins classes by *training
instances*: [1, 20), [20, 400), [400, 8000), [8000, inf) -> 1..4.

The per-class counts these rules read come from the data index
(:meth:`drcl.data.coco.CocoIndex.image_counts` / ``instance_counts``) or, for a raw json dict,
from :func:`class_counts`. Every table and figure takes names and colours from here.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from typing import Any

import numpy as np

FREQUENCY_GROUPS = ("r", "c", "f")
GROUP_NAMES = {"r": "rare", "c": "common", "f": "frequent"}
GROUP_COLORS = {"r": "#d62728", "c": "#ff7f0e", "f": "#2ca02c"}
# LVIS rule: rare <= 10 training images, common <= 100, frequent above.
RARE_MAX_IMAGES = 10
COMMON_MAX_IMAGES = 100
# COCO-LT bins: lower edges of AP1..AP4 in training instances.
COCOLT_EDGES = (1, 20, 400, 8000)


def lvis_frequency(
    image_count: int, rare_max: int = RARE_MAX_IMAGES, common_max: int = COMMON_MAX_IMAGES
) -> str:
    """LVIS frequency group ``'r'|'c'|'f'`` from the number of training images holding the class.

    0 images (a class absent from training) counts as rare. ``rare_max`` / ``common_max`` are
    LVIS's 10 / 100 unless a small dataset sets ``data.groups`` (see :func:`suggest_thresholds`).
    """
    if image_count <= rare_max:
        return "r"
    if image_count <= common_max:
        return "c"
    return "f"


def cocolt_bin(instance_count: int) -> int:
    """COCO-LT bin 1..4 of a class with ``instance_count`` training instances (0 -> bin 1)."""
    # number of lower edges the count reaches; [1,20) -> 1 ... [8000,inf) -> 4
    return max(1, int(np.searchsorted(COCOLT_EDGES, instance_count, side="right")))


def class_counts(data: Mapping[str, Any]) -> tuple[dict[int, int], dict[int, int]]:
    """Per-class training image counts and instance counts of a raw COCO/LVIS json dict.

    For jsons that need not be complete (no ``images``); a full json reads faster through
    :class:`~drcl.data.coco.CocoIndex`, which gives the same numbers.

    Returns:
        ``(image_counts, instance_counts)``, both ``{category_id: count}``; classes of
        ``data['categories']`` without annotations are present with 0. Every annotation counts
        as an instance (crowd ones included, as LVIS's ``instance_count`` does).
    """
    anns = data.get("annotations", [])
    instances = Counter(a["category_id"] for a in anns)
    images = Counter(cat for _, cat in {(a["image_id"], a["category_id"]) for a in anns})
    zero = {c["id"]: 0 for c in data.get("categories", [])}
    return {**zero, **images}, {**zero, **instances}
