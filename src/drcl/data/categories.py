"""The training categories that travel with a fine-tuned model, and the one way model labels
become category ids.

A detector predicts labels ``1..C`` (0 is background): positions in the *training* file's sorted
category ids (:func:`drcl.data.coco.contiguous_ids`). Those positions mean nothing in another
file: a validation json with one extra or renumbered category would shift every detection onto
a neighbouring class. So every fine-tuning run writes its training categories (id, name,
frequency group, model label, training counts) as a :class:`CategoryTable`:

- ``RUN/categories.json`` (written before training, so every checkpoint of the run has it);
- the string metadata ``drcl.categories`` of ``RUN/model_final.safetensors``.

Then:

- :func:`labels_to_category_ids` is the one mapping from model labels to category ids;
- :func:`match_categories` matches another file's categories *by id*: ids on one side only are
  listed in one line (their detections are dropped / they get none), and the same id with
  another name is refused unless explicitly allowed (``--allow-category-mismatch``);
- :func:`categories_for_checkpoint` finds the table of a checkpoint (metadata, then the
  ``categories.json`` of its run folder).
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from drcl.data.groups import COMMON_MAX_IMAGES, FREQUENCY_GROUPS, RARE_MAX_IMAGES, groups_for
from drcl.utils.io import atomic_write_json, read_json

log = logging.getLogger(__name__)

__all__ = [
    "CATEGORIES_FILE",
    "METADATA_KEY",
    "CategoryMatch",
    "CategoryMismatchError",
    "CategoryRecord",
    "CategoryTable",
    "categories_for_checkpoint",
    "labels_to_category_ids",
    "match_categories",
    "read_checkpoint_categories",
]

CATEGORIES_FILE = "categories.json"  # in a fine-tuning run folder
METADATA_KEY = "drcl.categories"  # safetensors string metadata of model_final.safetensors
FORMAT = "drcl.categories/v1"
_SHOWN = 5  # ids named per side in the one-line summary


class CategoryMismatchError(ValueError):
    """Categories of a model and of a file cannot be matched safely."""


@dataclass(frozen=True)
class CategoryRecord:
    """One training category as the model knows it.

    Attributes:
        id: category id in the training json.
        name: its name there.
        frequency: ``'r' | 'c' | 'f'`` (json ``frequency``, else the LVIS rule on training
            image counts), or None when unknown (a table read from an older file).
        label: the model's contiguous label, 1..C (index in the sorted ids + 1).
        image_count: training images holding the class.
        instance_count: training annotations of the class.
    """

    id: int
    name: str
    frequency: str | None
    label: int
    image_count: int = 0
    instance_count: int = 0


@dataclass(frozen=True)
class CategoryTable:
    """The training categories of a model, sorted by label (= by id).

    Attributes:
        records: C records, ``records[k].label == k + 1``.
        source: the training file they came from (informative only).
    """

    records: tuple[CategoryRecord, ...]
    source: str = ""

    def __post_init__(self) -> None:
        where = self.source or "categories"
        if not self.records:
            raise ValueError(f"{where}: no categories")
        ids = [r.id for r in self.records]
        if len(set(ids)) != len(ids):
            raise ValueError(f"{where}: duplicate category ids")
        if ids != sorted(ids) or [r.label for r in self.records] != list(range(1, len(ids) + 1)):
            raise ValueError(f"{where}: labels must be 1..C in increasing category-id order")
        bad = [r.id for r in self.records if r.frequency not in (*FREQUENCY_GROUPS, None)]
        if bad:
            raise ValueError(f"{where}: category {bad[0]}: frequency must be r, c, f or null")

    # ---- construction
    @classmethod
    def from_coco(
        cls,
        ann: Any,
        rare_max: int = RARE_MAX_IMAGES,
        common_max: int = COMMON_MAX_IMAGES,
    ) -> CategoryTable:
        """The table of a training json (path, dict or :class:`~drcl.data.coco.CocoIndex`).

        ``frequency`` is the json's field where valid, else the LVIS rule on the training image
        counts with thresholds ``rare_max`` / ``common_max`` (``data.groups``).
        """
        from drcl.data.coco import CocoIndex

        index = ann if isinstance(ann, CocoIndex) else _index(ann)
        images, instances = index.image_counts(), index.instance_counts()
        counts = index.counts_by_cat_id(images)
        groups = groups_for(index.categories, counts, True, rare_max, common_max)
        records = []
        for k, cat in enumerate(index.categories):
            freq = groups[int(cat["id"])]
            records.append(
                CategoryRecord(
                    id=int(cat["id"]),
                    name=str(cat.get("name", cat["id"])),
                    frequency=freq,
                    label=k + 1,
                    image_count=int(images[k]),
                    instance_count=int(instances[k]),
                )
            )
        return cls(tuple(records), source=index.path)

    def to_json(self) -> dict[str, Any]:
        """A json-serialisable dict (``format``, ``source``, ``categories``)."""
        cats = [
            {
                "id": r.id,
                "name": r.name,
                "frequency": r.frequency,
                "label": r.label,
                "image_count": r.image_count,
                "instance_count": r.instance_count,
            }
            for r in self.records
        ]
        return {"format": FORMAT, "source": self.source, "categories": cats}

    @classmethod
    def from_json(cls, obj: Any, where: str = "categories") -> CategoryTable:
        """Inverse of :meth:`to_json`; ``ValueError`` naming ``where`` and the record."""
        if not isinstance(obj, dict) or not isinstance(obj.get("categories"), list):
            raise ValueError(f"{where}: expected an object with a 'categories' list ({FORMAT})")
        records = []
        for i, c in enumerate(obj["categories"]):
            try:
                records.append(
                    CategoryRecord(
                        id=_int(c["id"]),
                        name=str(c["name"]),
                        frequency=c.get("frequency"),
                        label=_int(c["label"]),
                        image_count=_int(c.get("image_count", 0)),
                        instance_count=_int(c.get("instance_count", 0)),
                    )
                )
            except (KeyError, TypeError, ValueError) as err:
                raise ValueError(f"{where}: category {i}: missing or bad field {err}") from None
        return cls(tuple(sorted(records, key=lambda r: r.label)), source=str(obj.get("source", "")))

    def save(self, path: str | os.PathLike) -> Path:
        """Write ``to_json()`` atomically."""
        return atomic_write_json(path, self.to_json(), indent=1)

    @classmethod
    def load(cls, path: str | os.PathLike) -> CategoryTable:
        return cls.from_json(read_json(path), str(path))

    # ---- views
    @property
    def num_classes(self) -> int:
        return len(self.records)

    @property
    def cat_ids(self) -> list[int]:
        return [r.id for r in self.records]

    def by_id(self) -> dict[int, CategoryRecord]:
        return {r.id: r for r in self.records}

    def frequencies(self) -> list[str | None]:
        """Frequency group per label 1..C (entry ``label - 1``)."""
        return [r.frequency for r in self.records]


def _int(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"{value!r} is not an integer")
    return value


def _index(ann: Any):
    from drcl.data.coco import CocoIndex

    if isinstance(ann, str | os.PathLike):
        return CocoIndex.from_file(ann)
    return CocoIndex(ann)


# ---------------------------------------------------------------- the one label mapping


def labels_to_category_ids(labels: Any, table: CategoryTable) -> np.ndarray:
    """Model labels ``1..C`` -> the training file's category ids, through ``table``.

    The only place where a model label becomes a category id: inference, evaluation and
    prediction all call it (never a position in some other file's category list).

    Args:
        labels: (K,) integer labels (a tensor, an array or a list).
        table: the model's :class:`CategoryTable`.

    Returns:
        (K,) int64 category ids.

    Raises:
        ValueError: a label outside ``1..C`` (the model does not match the table).
    """
    labels = np.asarray(
        labels.detach().cpu() if hasattr(labels, "detach") else labels, dtype=np.int64
    ).reshape(-1)
    bad = (labels < 1) | (labels > table.num_classes)
    if bad.any():
        raise ValueError(
            f"model label {int(labels[bad][0])} outside 1..{table.num_classes}: the detector has "
            f"another number of classes than its category record ({table.source or 'categories'})"
        )
    ids = np.asarray(table.cat_ids, dtype=np.int64)
    return ids[labels - 1]


# ---------------------------------------------------------------- matching another file by id


@dataclass(frozen=True)
class CategoryMatch:
    """The model's categories matched by id against another file's.

    Attributes:
        shared: ids in both (their detections are evaluated).
        model_only: ids the model predicts but the file lacks (their detections are dropped).
        file_only: ids of the file the model never predicts (AP 0 where they have annotations).
        renamed: ``(id, model name, file name)`` for shared ids whose names differ.
        file: the other file's name, for messages.
    """

    shared: tuple[int, ...]
    model_only: tuple[int, ...]
    file_only: tuple[int, ...]
    renamed: tuple[tuple[int, str, str], ...]
    file: str

    @property
    def exact(self) -> bool:
        return not (self.model_only or self.file_only or self.renamed)

    def line(self, table: CategoryTable) -> str:
        """One line: how many matched, and the ids (with names) on one side only."""
        names = table.by_id()
        parts = [f"categories matched by id with {self.file}: {len(self.shared)} shared"]
        if self.model_only:
            shown = _ids_named(self.model_only, {i: names[i].name for i in self.model_only})
            parts.append(f"{len(self.model_only)} only in the model (detections dropped): {shown}")
        if self.file_only:
            parts.append(
                f"{len(self.file_only)} only in {Path(self.file).name} (never predicted): "
                f"{_ids_named(self.file_only, {})}"
            )
        if self.renamed:
            parts.append(f"{len(self.renamed)} with another name: {_renamed(self.renamed)}")
        return "; ".join(parts)

    def label_to_cat_id(self, table: CategoryTable) -> dict[int, int | None]:
        """``{label: category id}`` for every model label; None for ids the file lacks."""
        kept = set(self.shared)
        return {r.label: (r.id if r.id in kept else None) for r in table.records}


def _ids_named(ids: Sequence[int], names: Mapping[int, str]) -> str:
    shown = [f"{i} '{names[i]}'" if i in names else str(i) for i in ids[:_SHOWN]]
    more = f" (+{len(ids) - _SHOWN} more)" if len(ids) > _SHOWN else ""
    return ", ".join(shown) + more


def _renamed(renamed: Sequence[tuple[int, str, str]]) -> str:
    shown = [f"id {i}: '{a}' in the model, '{b}' in the file" for i, a, b in renamed[:_SHOWN]]
    more = f" (+{len(renamed) - _SHOWN} more)" if len(renamed) > _SHOWN else ""
    return ", ".join(shown) + more


def match_categories(
    table: CategoryTable,
    categories: Iterable[Mapping[str, Any]],
    file: str | os.PathLike = "<categories>",
    allow_mismatch: bool = False,
) -> CategoryMatch:
    """Match a file's ``categories`` to the model's by id (never by position).

    Args:
        table: the model's training categories.
        categories: the other file's category records (``id``, ``name``).
        file: its name, used in messages.
        allow_mismatch: accept shared ids whose names differ (``--allow-category-mismatch``).

    Returns:
        :class:`CategoryMatch`; its :meth:`~CategoryMatch.line` is logged as a warning by the
        callers when the match is not exact.

    Raises:
        CategoryMismatchError: no id in common, or names differ for the same id and
            ``allow_mismatch`` is False (the message names the ids and both names).
    """
    file = os.fspath(file)
    other = {int(c["id"]): str(c.get("name", c["id"])) for c in categories}
    ours = table.by_id()
    shared = tuple(sorted(set(ours) & set(other)))
    model_only = tuple(sorted(set(ours) - set(other)))
    file_only = tuple(sorted(set(other) - set(ours)))
    renamed = tuple((i, ours[i].name, other[i]) for i in shared if ours[i].name != other[i])
    match = CategoryMatch(shared, model_only, file_only, renamed, file)
    if not shared:
        raise CategoryMismatchError(
            f"{file}: no category id in common with the model's {table.num_classes} training "
            f"categories ({table.source or 'its record'}): ids are matched, never positions; "
            f"model ids {_ids_named(table.cat_ids, {})}, file ids {_ids_named(file_only, {})}"
        )
    if renamed and not allow_mismatch:
        raise CategoryMismatchError(
            f"{file}: {len(renamed)} category id(s) name another class than in the model's "
            f"training file ({table.source or 'its record'}): {_renamed(renamed)}; fix the ids, "
            "or pass --allow-category-mismatch (data.allow_category_mismatch=true) to evaluate "
            "them by id anyway"
        )
    return match


# ---------------------------------------------------------------- the record of a checkpoint


def read_checkpoint_categories(path: str | os.PathLike) -> CategoryTable | None:
    """The table in a safetensors file's metadata, or None (another format, or no record)."""
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), framework="pt") as fh:
            meta = fh.metadata() or {}
    except (SafetensorError, OSError, ValueError):
        return None
    text = meta.get(METADATA_KEY)
    if text is None:
        return None
    try:
        obj = json.loads(text)
    except json.JSONDecodeError as err:
        raise ValueError(f"{path}: metadata '{METADATA_KEY}' is not valid json: {err}") from None
    return CategoryTable.from_json(obj, f"{path} (metadata '{METADATA_KEY}')")


def categories_for_checkpoint(path: str | os.PathLike) -> CategoryTable | None:
    """The training categories of a detector checkpoint.

    Looks in the file's safetensors metadata, then for ``categories.json`` in the file's folder
    (its run folder: training checkpoints ``ckpt_*.pt`` have no metadata). None when neither
    exists (a checkpoint from before records, or from another tool).
    """
    table = read_checkpoint_categories(path)
    if table is not None:
        return table
    sibling = Path(path).resolve().parent / CATEGORIES_FILE
    return CategoryTable.load(sibling) if sibling.is_file() else None
