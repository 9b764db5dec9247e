"""Class groups for long-tail metrics: LVIS frequency groups (r/c/f) and COCO-LT bins (AP1..AP4).

LVIS (Gupta et al., CVPR 2019, Sec. 4) groups classes by the number of *training images* that
contain them: rare 1-10, common 11-100, frequent > 100. COCO-LT (Wang et al., ECCV 2020, BAGS)
bins classes by the number of *training instances*: [1, 20), [20, 400), [400, 8000),
[8000, inf) -> AP1, AP2, AP3, AP4.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from drcl.data.groups import COCOLT_EDGES, class_counts, cocolt_bin, lvis_frequency
from drcl.data.groups import FREQUENCY_GROUPS as GROUPS


def coco_lt_bin(instance_count: int) -> int | None:
    """COCO-LT bin 1..4 of a class with ``instance_count`` training instances; None for 0
    (a class never seen in training belongs to no bin when evaluating)."""
    return None if instance_count < COCOLT_EDGES[0] else cocolt_bin(instance_count)


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
        groups_source: where the groups came from ('frequency', 'train_ann', 'image_count') or
            None.
        bins_source: where the instance counts came from ('train_ann', 'instance_count') or None.
    """

    cat_ids: list[int]
    names: list[str]
    groups: list[str | None]
    bins: list[int | None]
    train_images: list[int | None]
    train_instances: list[int | None]
    groups_source: str | None
    bins_source: str | None


def _from_field(cats: list[dict[str, Any]], key: str) -> list[Any] | None:
    values = [c.get(key) for c in cats]
    return values if all(v is not None for v in values) else None


def class_info(categories: list[dict[str, Any]], train: dict[str, Any] | None = None) -> ClassInfo:
    """Frequency groups and COCO-LT bins of ``categories``.

    Groups: the categories' own ``frequency`` field (LVIS jsons carry it), else the LVIS rule on
    image counts of ``train``, else on the categories' ``image_count`` field. Bins: instance
    counts of ``train``, else the categories' ``instance_count`` field. Unknown -> None.
    """
    cats = sorted(categories, key=lambda c: c["id"])
    ids = [c["id"] for c in cats]
    images = instances = None
    img_src = inst_src = None
    if train is not None:
        img_counts, inst_counts = class_counts(train)
        images = [img_counts.get(i, 0) for i in ids]
        instances = [inst_counts.get(i, 0) for i in ids]
        img_src = inst_src = "train_ann"
    else:
        images, instances = _from_field(cats, "image_count"), _from_field(cats, "instance_count")
        img_src = "image_count" if images is not None else None
        inst_src = "instance_count" if instances is not None else None
    groups, groups_source = _from_field(cats, "frequency"), "frequency"
    if groups is None and images is not None:
        groups, groups_source = [lvis_frequency(n) for n in images], img_src
    elif groups is None:
        groups_source = None
    bad = sorted({g for g in groups or [] if g not in GROUPS})
    if bad:
        raise ValueError(f"categories: field 'frequency': unknown values {bad}, allowed r, c, f")
    k = len(ids)
    return ClassInfo(
        cat_ids=ids,
        names=[str(c.get("name", c["id"])) for c in cats],
        groups=list(groups) if groups is not None else [None] * k,
        bins=[coco_lt_bin(n) for n in instances] if instances is not None else [None] * k,
        train_images=list(images) if images is not None else [None] * k,
        train_instances=list(instances) if instances is not None else [None] * k,
        groups_source=groups_source,
        bins_source=inst_src,
    )
