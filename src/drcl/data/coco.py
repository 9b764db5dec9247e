"""COCO / LVIS annotation index: records by id, contiguous labels, class counts, frequency groups.

Conventions shared by the whole project:

- Detection labels are ``1..C`` in sorted category-id order; ``0`` is background (torchvision).
  ``contiguous_ids(categories)`` is the one mapping: label = index in that list + 1.
- Frequency groups and COCO-LT bins: :func:`drcl.data.groups.groups_for` / ``bins_for`` (the
  index supplies the training counts).

LVIS v1 extras that are read when present: ``images[].neg_category_ids``,
``images[].not_exhaustive_category_ids``, ``categories[].frequency / image_count / instance_count``.
This module trusts the json structure (run ``drcl data check`` first); it raises ``ValueError``
naming file and record only for inconsistencies that would silently corrupt labels.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from drcl.data.groups import (  # noqa: F401  (re-exported: the index's vocabulary)
    COCOLT_EDGES,
    COMMON_MAX_IMAGES,
    FREQUENCY_GROUPS,
    RARE_MAX_IMAGES,
    bins_for,
    groups_for,
)
from drcl.utils.io import read_json


def contiguous_ids(categories: Iterable[Mapping[str, Any]]) -> list[int]:
    """Sorted category ids; the detection label of ``cat_id`` is its index here plus one."""
    return sorted(int(c["id"]) for c in categories)


def unique_ints(x: np.ndarray) -> np.ndarray:
    """Sorted unique values of an integer array (sort + diff: much faster than ``np.unique`` on
    millions of int64 keys in numpy 2.x)."""
    s = np.sort(x)
    if len(s) == 0:
        return s
    return s[np.concatenate(([True], s[1:] != s[:-1]))]


@dataclass(frozen=True)
class ImageLabels:
    """Category labels of every image, in CSR form (fast for 100k+ images).

    The labels of image ``image_ids[i]`` are ``labels[offsets[i]:offsets[i + 1]]``, one entry per
    annotation (duplicates kept, so instance counts are available; ``as_lists(unique=True)``
    for image level).

    Attributes:
        image_ids: (N,) int64 image ids in the index's fixed image order (json order).
        offsets: (N + 1,) int64, ``offsets[0] == 0``, ``offsets[-1] == len(labels)``.
        labels: (M,) int64 contiguous labels 1..C, grouped by image, json order inside an image.
    """

    image_ids: np.ndarray
    offsets: np.ndarray
    labels: np.ndarray

    def __len__(self) -> int:
        return len(self.image_ids)

    def of(self, i: int) -> np.ndarray:
        """(K,) labels of the ``i``-th image (a view, not a copy)."""
        return self.labels[self.offsets[i] : self.offsets[i + 1]]

    def as_lists(self, unique: bool = False) -> list[np.ndarray]:
        """Per-image label arrays; ``unique=True`` gives each class once per image, sorted."""
        if not unique:
            return np.split(self.labels, self.offsets[1:-1])
        # one sorted, de-duplicated key per (image, label) pair, then split per image
        base = int(self.labels.max(initial=0)) + 1
        image_pos = np.repeat(np.arange(len(self)), np.diff(self.offsets))
        keys = unique_ints(image_pos * base + self.labels)
        counts = np.bincount(keys // base, minlength=len(self))
        return np.split(keys % base, np.cumsum(counts)[:-1])


class CocoIndex:
    """Index over a COCO / LVIS annotation dict.

    Attributes:
        path: the json file it came from (``None`` for an in-memory dict); used in messages.
        data: the raw dict.
        images: ``{image_id: image record}`` in json order.
        image_ids: image ids in json order (the fixed order used by every per-image array).
        anns_by_image: ``{image_id: [annotation records]}`` (every image has an entry).
        categories: category records sorted by id.
        cat_ids: contiguous ids (sorted category ids); ``cat_id_to_label[cid] = index + 1``.
        num_classes: C.
    """

    def __init__(self, data: Mapping[str, Any], path: str | os.PathLike | None = None):
        self.path = str(path) if path is not None else "<annotations>"
        self.data = data
        for key in ("images", "annotations", "categories"):
            if not isinstance(data.get(key), list):
                raise ValueError(f"{self.path}: top-level '{key}' missing or not a list")
        try:
            self._build(data)
        except (KeyError, TypeError) as err:
            raise ValueError(
                f"{self.path}: malformed record (missing or bad field {err}); "
                f"run `drcl data check {self.path}` for a full list"
            ) from err

    def _build(self, data: Mapping[str, Any]) -> None:
        self.images = {int(img["id"]): img for img in data["images"]}
        if len(self.images) != len(data["images"]):
            raise ValueError(f"{self.path}: duplicate image ids")
        self.image_ids = list(self.images)
        self.categories = sorted(data["categories"], key=lambda c: int(c["id"]))
        self.cat_ids = contiguous_ids(self.categories)
        if len(set(self.cat_ids)) != len(self.cat_ids):
            raise ValueError(f"{self.path}: duplicate category ids")
        self.num_classes = len(self.cat_ids)
        self.cat_id_to_label = {cid: i + 1 for i, cid in enumerate(self.cat_ids)}
        self.label_to_cat_id = {i + 1: cid for i, cid in enumerate(self.cat_ids)}
        self.anns_by_image: dict[int, list[dict]] = {iid: [] for iid in self.image_ids}
        self._ann_image_index, self._ann_labels = self._index_annotations(data["annotations"])
        self._iscrowd = np.fromiter(
            (int(a.get("iscrowd", 0)) for a in data["annotations"]), np.int64
        )

    @classmethod
    def from_file(cls, path: str | os.PathLike) -> CocoIndex:
        """Load a json file (``ValueError`` naming file and line on bad json)."""
        data = read_json(path)
        if not isinstance(data, dict):
            raise ValueError(f"{path}: top level is {type(data).__name__}, expected an object")
        return cls(data, Path(path))

    def _index_annotations(self, anns: list[dict]) -> tuple[np.ndarray, np.ndarray]:
        """Fill ``anns_by_image``; return (M,) image positions and (M,) labels per annotation."""
        position = {iid: i for i, iid in enumerate(self.image_ids)}
        img_idx = np.empty(len(anns), np.int64)
        labels = np.empty(len(anns), np.int64)
        for k, ann in enumerate(anns):
            iid, cid = int(ann["image_id"]), int(ann["category_id"])
            if iid not in position:
                raise ValueError(f"{self.path}: annotation {ann.get('id')}: unknown image_id {iid}")
            if cid not in self.cat_id_to_label:
                raise ValueError(
                    f"{self.path}: annotation {ann.get('id')}: unknown category_id {cid}"
                )
            self.anns_by_image[iid].append(ann)
            img_idx[k], labels[k] = position[iid], self.cat_id_to_label[cid]
        return img_idx, labels

    def image_labels(self) -> ImageLabels:
        """Per-image annotation labels as CSR arrays, images in ``image_ids`` order."""
        order = np.argsort(self._ann_image_index, kind="stable")  # keeps json order per image
        per_image = np.bincount(self._ann_image_index, minlength=len(self.image_ids))
        offsets = np.zeros(len(self.image_ids) + 1, np.int64)
        np.cumsum(per_image, out=offsets[1:])
        ids = np.asarray(self.image_ids, np.int64)
        return ImageLabels(ids, offsets, self._ann_labels[order])

    def _mask(self, include_crowd: bool) -> np.ndarray:
        return np.ones(len(self._ann_labels), bool) if include_crowd else self._iscrowd == 0

    def instance_counts(self, include_crowd: bool = True) -> np.ndarray:
        """(C,) int64 annotations per class; entry ``label - 1``."""
        labels = self._ann_labels[self._mask(include_crowd)]
        return np.bincount(labels, minlength=self.num_classes + 1)[1:].astype(np.int64)

    def image_counts(self, include_crowd: bool = True) -> np.ndarray:
        """(C,) int64 number of images holding at least one annotation of each class."""
        keep = self._mask(include_crowd)
        # one key per (image, label) pair; unique pairs counted per label
        pairs = self._ann_image_index[keep] * (self.num_classes + 1) + self._ann_labels[keep]
        labels = unique_ints(pairs) % (self.num_classes + 1)
        return np.bincount(labels, minlength=self.num_classes + 1)[1:].astype(np.int64)

    def counts_by_cat_id(self, counts: np.ndarray) -> dict[int, int]:
        """``{cat_id: count}`` from a (C,) array indexed by ``label - 1``."""
        return {cid: int(n) for cid, n in zip(self.cat_ids, counts, strict=True)}

    def frequency_groups(
        self,
        use_json: bool = True,
        rare_max: int = RARE_MAX_IMAGES,
        common_max: int = COMMON_MAX_IMAGES,
    ) -> dict[int, str]:
        """``{cat_id: 'r'|'c'|'f'}``: json ``frequency`` if present, else LVIS rule on this json
        (thresholds ``rare_max`` / ``common_max``, ``data.groups``).

        Only meaningful on the *training* json when computed (the rule uses its image counts).
        """
        counts = self.counts_by_cat_id(self.image_counts())
        return groups_for(self.categories, counts, use_json, rare_max, common_max)

    def cocolt_bins(self) -> dict[int, int | None]:
        """``{cat_id: 1..4 or None}`` COCO-LT bin from this json's instance counts."""
        return bins_for(self.counts_by_cat_id(self.instance_counts()))

    def __repr__(self) -> str:
        return (
            f"CocoIndex({self.path!r}, images={len(self.image_ids)}, "
            f"annotations={len(self._ann_labels)}, categories={self.num_classes})"
        )


def load_coco(path: str | os.PathLike) -> CocoIndex:
    """Shorthand for ``CocoIndex.from_file(path)``."""
    return CocoIndex.from_file(path)
