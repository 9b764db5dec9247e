"""Class-frequency groups, defined once: LVIS r/c/f, COCO-LT bins, their names and colours.

LVIS (Gupta et al., CVPR 2019, Sec. 4) groups classes by the number of *training images* that
contain them: rare 1-10, common 11-100, frequent > 100 (a class absent from training counts as
rare: it is the rarest possible). COCO-LT (Tan et al., 2020) bins classes by *training
instances*: [1, 20), [20, 400), [400, 8000), [8000, inf) -> 1..4; a class without training
instances belongs to no bin.

The one rule for a category's group (:func:`groups_for`): a valid ``frequency`` field
(``'r' | 'c' | 'f'``, LVIS v1) wins; a missing one (absent or null) is computed with the LVIS
rule from the training image counts; an unknown value is an error naming the category (``drcl
data check`` reports it too). COCO-LT bins come from :func:`bins_for`.

The per-class counts these rules read come from the data index
(:meth:`drcl.data.coco.CocoIndex.image_counts` / ``instance_counts``) or, for a raw json dict,
from :func:`class_counts`. Every table and figure takes names and colours from here.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
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


def check_thresholds(rare_max: int, common_max: int) -> None:
    """``ValueError`` naming ``data.groups`` unless ``0 <= rare_max < common_max``."""
    if not (0 <= int(rare_max) < int(common_max)):
        raise ValueError(
            f"data.groups: need 0 <= rare_max < common_max, got rare_max={rare_max}, "
            f"common_max={common_max}"
        )


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


def cocolt_bin(instance_count: int) -> int | None:
    """COCO-LT bin 1..4 of a class with ``instance_count`` training instances; None for 0 (a
    class never seen in training is in no bin: AP1 is over [1, 20) instances)."""
    # number of lower edges the count reaches; [1,20) -> 1 ... [8000,inf) -> 4
    reached = int(np.searchsorted(COCOLT_EDGES, instance_count, side="right"))
    return reached or None


def bins_for(instance_counts: Mapping[int, int]) -> dict[int, int | None]:
    """``{cat_id: 1..4 or None}``: COCO-LT bin from training instances per category id."""
    return {int(cid): cocolt_bin(int(n)) for cid, n in instance_counts.items()}


def frequency_of(category: Mapping[str, Any]) -> str | None:
    """The category's ``frequency`` field: ``'r' | 'c' | 'f'``, or None when absent or null.

    Raises:
        ValueError: any other value (names the category and the value).
    """
    freq = category.get("frequency")
    if freq is None or freq in FREQUENCY_GROUPS:
        return freq
    raise ValueError(
        f"category {category.get('id')}: field 'frequency': unknown value {freq!r}, "
        "allowed r, c, f (or leave it out to compute it from the training images)"
    )


def groups_for(
    categories: Iterable[Mapping[str, Any]],
    image_counts: Mapping[int, int] | None = None,
    use_json: bool = True,
    rare_max: int = RARE_MAX_IMAGES,
    common_max: int = COMMON_MAX_IMAGES,
) -> dict[int, str]:
    """Frequency group of every category, by the one rule of this module.

    Args:
        categories: category records (``id``, optional ``frequency``).
        image_counts: training images per category id, for categories without a ``frequency``
            (or all of them when ``use_json`` is False); an id missing here counts as 0 images.
        use_json: trust ``categories[].frequency`` (it is still checked).
        rare_max, common_max: the LVIS rule's thresholds (``data.groups``; LVIS: 10, 100).

    Returns:
        ``{cat_id: 'r' | 'c' | 'f'}`` in the order of ``categories``.

    Raises:
        ValueError: an unknown ``frequency`` value, or a category without one and no
            ``image_counts`` (names the category).
    """
    groups = {}
    for cat in categories:
        cid = int(cat["id"])
        freq = frequency_of(cat)
        if use_json and freq is not None:
            groups[cid] = freq
            continue
        if image_counts is None:
            raise ValueError(
                f"category {cid}: no 'frequency' field and no training image counts given"
            )
        groups[cid] = lvis_frequency(int(image_counts.get(cid, 0)), rare_max, common_max)
    return groups


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


def suggest_thresholds(image_counts: Sequence[int]) -> tuple[int, int] | None:
    """``(rare_max, common_max)`` that give each frequency group about a third of the classes.

    For a dataset too small (or too large) for LVIS's fixed 10 / 100 images: the thresholds are
    the class image counts at the 1/3 and 2/3 quantiles (LVIS v1 itself splits its classes
    about 28 / 38 / 34 % into r / c / f), i.e. they scale with the dataset's image count as the
    RFS threshold ``t`` (a fraction of the images) does. None when the classes have fewer than
    three distinct counts (three groups are impossible).
    """
    counts = np.sort(np.asarray([int(n) for n in image_counts if int(n) > 0], dtype=np.int64))
    distinct = np.unique(counts)
    if distinct.size < 3:
        return None
    rare_max = int(counts[(counts.size - 1) // 3])
    rare_max = min(rare_max, int(distinct[-3]))  # leave room for two groups above
    above = distinct[distinct > rare_max]
    common_max = max(int(counts[(2 * counts.size - 1) // 3]), int(above[0]))
    common_max = min(common_max, int(above[-2]))  # something must stay frequent
    return rare_max, common_max


def empty_group_warning(
    image_counts: Sequence[int],
    groups: Sequence[str | None],
    rare_max: int = RARE_MAX_IMAGES,
    common_max: int = COMMON_MAX_IMAGES,
    num_images: int | None = None,
) -> str | None:
    """One sentence when a frequency group has no class, with thresholds to try; else None.

    Args:
        image_counts: training images per class.
        groups: the classes' groups (``'r' | 'c' | 'f'``).
        rare_max, common_max: the thresholds in use (``data.groups``).
        num_images: training images, named in the sentence.
    """
    empty = [GROUP_NAMES[g] for g in FREQUENCY_GROUPS if g not in set(groups)]
    if not empty:
        return None
    size = f"{num_images} training images, " if num_images is not None else ""
    nonzero = [int(n) for n in image_counts if int(n) > 0]
    span = f"{min(nonzero)}-{max(nonzero)}" if nonzero else "0"
    text = (
        f"frequency groups: no {' and no '.join(empty)} class under rare_max={rare_max} / "
        f"common_max={common_max} images ({size}{span} images per class); "
        "its AP is n/a"
    )
    suggested = suggest_thresholds(image_counts)
    if suggested is None:
        return text + " (fewer than three distinct class image counts: no thresholds fill all)"
    return (
        text + f"; for a dataset this size try data.groups.rare_max={suggested[0]} "
        f"data.groups.common_max={suggested[1]} (about a third of the classes per group)"
    )


# LVIS v1 train: the dataset the standard RFS threshold t = 1e-3 was chosen on.
LVIS_TRAIN_IMAGES = 100_170
LVIS_RFS_THRESHOLD = 1e-3


def scaled_rfs_threshold(num_images: int) -> float:
    """RFS threshold ``t`` giving a class of this dataset the repeat factor it would get in LVIS
    with the same number of training images: ``t = 1e-3 x 100170 / N`` (at most 1).

    ``r(c) = max(1, sqrt(t / f(c)))`` with ``f(c)`` = images with c / N, so keeping ``t * N``
    fixed keeps ``r`` a function of the image count; the demo configs use it (0.1 for 1040
    images). A dataset larger than LVIS keeps LVIS's 1e-3.
    """
    if num_images < 1:
        return LVIS_RFS_THRESHOLD
    return float(
        min(1.0, max(LVIS_RFS_THRESHOLD, LVIS_RFS_THRESHOLD * LVIS_TRAIN_IMAGES / num_images))
    )
