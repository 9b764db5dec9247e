"""Class groups for long-tail metrics: LVIS frequency groups (r/c/f) and COCO-LT bins (AP1..AP4).

LVIS (Gupta et al., CVPR 2019, Sec. 4) groups classes by the number of *training images* that
contain them: rare 1-10, common 11-100, frequent > 100. COCO-LT (Wang et al., ECCV 2020, BAGS)
bins classes by the number of *training instances*: [1, 20), [20, 400), [400, 8000),
[8000, inf) -> AP1, AP2, AP3, AP4.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

from drcl.data.groups import (
    COMMON_MAX_IMAGES,
    RARE_MAX_IMAGES,
    check_thresholds,
    class_counts,
    cocolt_bin,
    empty_group_warning,
    frequency_of,
    groups_for,
    lvis_frequency,
)
from drcl.data.groups import FREQUENCY_GROUPS as GROUPS  # noqa: F401  (re-exported)

EVAL_FILE_COUNTS = "counts from the evaluation file, not training"
HOW_TO_GET = "pass --train-ann TRAIN.json (or use a gt with categories[].frequency)"

logger = logging.getLogger(__name__)


@dataclass
class ClassInfo:
    """What is known about each evaluated class, aligned with the sorted category ids.

    Attributes:
        cat_ids: (K,) sorted category ids of the ground truth.
        names: K names.
        groups: K frequency groups 'r'/'c'/'f', or None where unknown.
        bins: K COCO-LT bins 1..4, or None where unknown / no training instance.
        train_images: K training image counts, or None where unknown.
        train_instances: K training instance counts, or None where unknown.
        groups_source: where the groups came from ('frequency', 'train_ann') or None.
        bins_source: where the instance counts came from ('train_ann', 'instance_count') or None.
        notes: sentences for the reader (counts from the evaluation file, groups unavailable,
            ``frequency`` and ``--train-ann`` disagreeing); each is also logged once as a warning.
    """

    cat_ids: list[int]
    names: list[str]
    groups: list[str | None]
    bins: list[int | None]
    train_images: list[int | None]
    train_instances: list[int | None]
    groups_source: str | None
    bins_source: str | None
    notes: list[str] = field(default_factory=list)


def _num_images(train: dict[str, Any]) -> int | None:
    images = train.get("images")
    return len(images) if isinstance(images, list) else None


def _from_field(cats: list[dict[str, Any]], key: str) -> list[Any] | None:
    values = [c.get(key) for c in cats]
    return values if all(v is not None for v in values) else None


def class_info(
    categories: list[dict[str, Any]],
    train: dict[str, Any] | None = None,
    rare_max: int = RARE_MAX_IMAGES,
    common_max: int = COMMON_MAX_IMAGES,
) -> ClassInfo:
    """Frequency groups and COCO-LT bins of ``categories``.

    Groups: the categories' own ``frequency`` field (LVIS jsons carry it), else the LVIS rule on
    the image counts of ``train``, else unavailable (None): the evaluation file's own
    ``image_count`` describes the evaluation set, and the LVIS rule on it would call most classes
    rare. Bins and the training counts per class: ``train``, else the evaluation file's
    ``instance_count`` / ``image_count`` fields when its ``frequency`` field says it is an LVIS
    file (labelled as such in ``notes``), else unavailable. ``rare_max`` / ``common_max`` are
    the LVIS rule's thresholds (``data.groups``); a group left without classes is noted with
    thresholds to try.
    """
    check_thresholds(rare_max, common_max)
    cats = sorted(categories, key=lambda c: c["id"])
    ids = [c["id"] for c in cats]
    k, notes = len(ids), []
    fields = [frequency_of(c) for c in cats]  # raises on an unknown value
    json_groups = fields if all(f is not None for f in fields) else None
    images = instances = None
    src = None
    if train is not None:
        img_counts, inst_counts = class_counts(train)
        images = [img_counts.get(i, 0) for i in ids]
        instances = [inst_counts.get(i, 0) for i in ids]
        src = "train_ann"
    elif json_groups is not None:
        images, instances = _from_field(cats, "image_count"), _from_field(cats, "instance_count")
        if images is not None or instances is not None:
            notes.append(f"per-class counts and COCO-LT bins: {EVAL_FILE_COUNTS}; {HOW_TO_GET}")
    groups, groups_source = json_groups, "frequency"
    if groups is None and src == "train_ann":
        # the one rule (drcl.data.groups): a category's own field, else the training images
        by_id = groups_for(cats, dict(zip(ids, images, strict=True)), True, rare_max, common_max)
        groups = [by_id[i] for i in ids]
        groups_source = "train_ann"
        empty = empty_group_warning(images, groups, rare_max, common_max, _num_images(train))
        if empty:
            notes.append(empty)
    elif groups is None:
        groups_source = None
        notes.append(f"APr/APc/APf and AP1..AP4 unavailable: no frequency groups; {HOW_TO_GET}")
    elif src == "train_ann":
        differ = sum(
            g != lvis_frequency(n, rare_max, common_max)
            for g, n in zip(groups, images, strict=True)
        )
        if differ:
            notes.append(
                f"frequency groups from the gt's 'frequency' field; the LVIS rule on --train-ann's "
                f"image counts gives another group for {differ} of {k} classes"
            )
    for note in notes:
        logger.warning(note)
    return ClassInfo(
        cat_ids=ids,
        names=[str(c.get("name", c["id"])) for c in cats],
        groups=list(groups) if groups is not None else [None] * k,
        bins=[cocolt_bin(n) for n in instances] if instances is not None else [None] * k,
        train_images=list(images) if images is not None else [None] * k,
        train_instances=list(instances) if instances is not None else [None] * k,
        groups_source=groups_source,
        bins_source=(src or "instance_count") if instances is not None else None,
        notes=notes,
    )
