"""Detections in COCO results format: read (one file, several per-rank files, a glob, a list or an
array), validate, and keep the top-k per image.

Records are turned into flat numpy columns file by file, so the Python dicts of one file are
freed before the next is read; only the detections that survive the LVIS rules are turned back
into the dicts that faster-coco-eval needs.
"""

from __future__ import annotations

import glob as globlib
import json
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from faster_coco_eval.core import mask as mask_utils

from drcl.utils.io import atomic_write, read_json

DetectionsInput = str | os.PathLike | Sequence[str | os.PathLike] | list[dict] | np.ndarray
NUMPY_COLUMNS = ("image_id", "x", "y", "width", "height", "score", "category_id")


@dataclass
class Detections:
    """Flat columns of N detections.

    Attributes:
        image_id: (N,) int64.
        category_id: (N,) int64.
        score: (N,) float64, finite.
        bbox: (N, 4) float64 COCO xywh with w, h >= 0; None for mask-only input (segm).
        segmentation: N masks (RLE dicts or polygon lists), or None for box-only input.
    """

    image_id: np.ndarray
    category_id: np.ndarray
    score: np.ndarray
    bbox: np.ndarray | None = None
    segmentation: list[Any] | None = None

    def __len__(self) -> int:
        return int(self.image_id.shape[0])

    def select(self, index: np.ndarray) -> Detections:
        """Rows ``index`` (integer indices or a boolean mask), in that order."""
        index = np.asarray(index)
        if index.dtype == bool:
            index = np.flatnonzero(index)
        segm = None if self.segmentation is None else [self.segmentation[i] for i in index]
        bbox = None if self.bbox is None else self.bbox[index]
        return Detections(
            self.image_id[index], self.category_id[index], self.score[index], bbox, segm
        )

    @staticmethod
    def concat(parts: Sequence[Detections]) -> Detections:
        """Concatenate in order; all parts must carry the same columns."""
        if not parts:
            return empty_detections()
        bbox = None if parts[0].bbox is None else np.concatenate([p.bbox for p in parts])
        segm = None if parts[0].segmentation is None else [s for p in parts for s in p.segmentation]
        return Detections(
            np.concatenate([p.image_id for p in parts]),
            np.concatenate([p.category_id for p in parts]),
            np.concatenate([p.score for p in parts]),
            bbox,
            segm,
        )


def empty_detections(iou_type: str = "bbox") -> Detections:
    """No detections, with the columns that ``iou_type`` uses."""
    z = np.zeros(0)
    return Detections(
        z.astype(np.int64),
        z.astype(np.int64),
        z,
        np.zeros((0, 4)) if iou_type == "bbox" else None,
        [] if iou_type == "segm" else None,
    )


# ---------------------------------------------------------------- validation of json records


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _required(iou_type: str) -> tuple[str, ...]:
    geometry = "bbox" if iou_type == "bbox" else "segmentation"
    return ("image_id", "category_id", geometry, "score")


def _is_int(value: Any) -> bool:
    """A JSON / Python / numpy integer; ``True`` and ``"3"`` are not."""
    return isinstance(value, int | np.integer) and not isinstance(value, bool | np.bool_)


def _is_number(value: Any) -> bool:
    """A JSON / Python / numpy real number; ``True``, ``"0.5"`` and ``None`` are not."""
    return isinstance(value, int | float | np.integer | np.floating) and not isinstance(
        value, bool | np.bool_
    )


def _type_name(value: Any) -> str:
    return f"{_short(value)} ({type(value).__name__})"


def _record_problem(rec: Any, iou_type: str) -> str | None:
    """Why one record is malformed (``"field 'x': ..."``), or None. Unknown ids, non-finite
    scores and negative sizes are checked later, column-wise."""
    if not isinstance(rec, dict):
        return f"expected an object, got {_short(rec)}"
    for field in _required(iou_type):
        if field not in rec:
            return f"missing field '{field}'"
    for field in ("image_id", "category_id"):
        if not _is_int(rec[field]):
            return f"field '{field}': not an integer: {_type_name(rec[field])}"
    if not _is_number(rec["score"]):
        kind = "a finite number" if rec["score"] is None else "a number"
        return f"field 'score': not {kind}: {_type_name(rec['score'])}"
    box = rec.get("bbox") if iou_type == "bbox" else None
    if iou_type == "bbox" and not (
        isinstance(box, list | tuple) and len(box) == 4 and all(_is_number(v) for v in box)
    ):
        return f"field 'bbox': malformed, expected [x, y, width, height] numbers, got {_short(box)}"
    return None


def _raise_first_bad_record(records: list, source: str, iou_type: str) -> None:
    """Slow path, only after the fast checks failed: name the first bad record."""
    for i, rec in enumerate(records):
        why = _record_problem(rec, iou_type)
        if why:
            raise ValueError(f"{source}: record {i}: {why}")


def _types_ok(records: list, iou_type: str) -> bool:
    """Fast strictness check over the sets of value types (a few set lookups per record):
    ids are integers, score and box entries are real numbers, never bools or strings."""
    ints = {type(r["image_id"]) for r in records} | {type(r["category_id"]) for r in records}
    reals = {type(r["score"]) for r in records}
    if iou_type == "bbox":
        if not {type(r["bbox"]) for r in records} <= {list, tuple}:
            return False
        reals |= {type(v) for r in records for v in r["bbox"]}
    bad_int = any(
        not issubclass(t, int | np.integer) or issubclass(t, bool | np.bool_) for t in ints
    )
    bad_real = any(
        not issubclass(t, int | float | np.integer | np.floating) or issubclass(t, bool | np.bool_)
        for t in reals
    )
    return not (bad_int or bad_real)


def _first(bad: np.ndarray) -> int | None:
    idx = np.flatnonzero(bad)
    return int(idx[0]) if idx.size else None


def _check_ids(
    values: np.ndarray, known: np.ndarray, field: str, records: list, source: str
) -> np.ndarray:
    """Integer-valued and present in the ground truth; returns the int64 column."""
    i = _first(~np.isfinite(values) | (values != np.floor(values)))
    if i is not None:
        raise ValueError(
            f"{source}: record {i}: field '{field}': not an integer ({_short(records[i][field])})"
        )
    ints = values.astype(np.int64)
    i = _first(~np.isin(ints, known))
    if i is not None:
        what = "image" if field == "image_id" else "category"
        raise ValueError(
            f"{source}: record {i}: field '{field}': unknown {what} id {ints[i]} "
            "(not in the ground truth)"
        )
    return ints


def _check_boxes(boxes: np.ndarray, records: list, source: str) -> np.ndarray:
    """(N, 4) finite xywh with w, h >= 0."""
    if boxes.size == 0:
        return boxes.reshape(0, 4)
    if boxes.ndim != 2 or boxes.shape[1] != 4:
        _raise_first_bad_record(records, source, "bbox")
        i = next(i for i, r in enumerate(records) if len(r["bbox"]) != 4)
        raise ValueError(f"{source}: record {i}: field 'bbox': malformed ({_short(records[i])})")
    i = _first(~np.isfinite(boxes).all(axis=1) | (boxes[:, 2:] < 0).any(axis=1))
    if i is not None:
        raise ValueError(
            f"{source}: record {i}: field 'bbox': malformed, expected finite [x, y, width, "
            f"height] with width, height >= 0, got {_short(records[i]['bbox'])}"
        )
    return boxes


def _check_segms(
    records: list, image_id: np.ndarray, sizes: dict[int, tuple[int, int]], source: str
) -> list[Any]:
    """Masks must be an RLE dict (``size`` = the image's [h, w]) or a list of polygons."""
    segms = [r["segmentation"] for r in records]
    for i, (s, img) in enumerate(zip(segms, image_id.tolist(), strict=True)):
        rle_ok = isinstance(s, dict) and "size" in s and "counts" in s
        poly_ok = isinstance(s, list) and len(s) > 0 and all(isinstance(p, list) for p in s)
        if not (rle_ok or poly_ok):
            raise ValueError(
                f"{source}: record {i}: field 'segmentation': expected an RLE "
                f"{{'size': [h, w], 'counts': ...}} or a list of polygons, got {_short(s)}"
            )
        if rle_ok and list(s["size"]) != list(sizes[img]):
            raise ValueError(
                f"{source}: record {i}: field 'segmentation': RLE size {list(s['size'])} "
                f"differs from image {img}'s size {list(sizes[img])}"
            )
    return segms


@dataclass
class KnownIds:
    """What the ground truth allows: image ids, category ids and image sizes.

    Attributes:
        image_ids: (I,) sorted. cat_ids: (K,) sorted. sizes: {image_id: (height, width)}.
    """

    image_ids: np.ndarray
    cat_ids: np.ndarray
    sizes: dict[int, tuple[int, int]]


def detections_from_records(
    records: Any, source: str, iou_type: str, known: KnownIds
) -> Detections:
    """Validate COCO results records and turn them into columns.

    Args:
        records: the parsed json, a list of ``{image_id, category_id, bbox | segmentation,
            score}``.
        source: name used in error messages (file path or ``<list>``).
        iou_type: 'bbox' (needs ``bbox``) or 'segm' (needs ``segmentation``).
        known: ids and image sizes of the ground truth.

    Raises:
        ValueError: naming ``source``, the record index and the field.
    """
    if not isinstance(records, list):
        raise ValueError(
            f"{source}: expected a list of detections (COCO results format), "
            f"got {type(records).__name__}"
        )
    fields = _required(iou_type)
    try:
        # Fast path: one list comprehension per field; any failure -> name the record.
        cols = {f: np.array([r[f] for r in records], dtype=np.float64) for f in fields[:2]}
        cols["score"] = np.array([r["score"] for r in records], dtype=np.float64)
        if iou_type == "bbox":
            cols["bbox"] = np.array([r["bbox"] for r in records], dtype=np.float64)
        elif any("segmentation" not in r for r in records):
            raise KeyError("segmentation")
        if not _types_ok(records, iou_type):
            raise TypeError("strict types")
    except (KeyError, TypeError, ValueError, IndexError) as err:
        _raise_first_bad_record(records, source, iou_type)
        raise ValueError(f"{source}: malformed detections ({err})") from None
    i = _first(~np.isfinite(cols["score"]))
    if i is not None:
        raise ValueError(
            f"{source}: record {i}: field 'score': not a finite number "
            f"({_short(records[i]['score'])})"
        )
    image_id = _check_ids(cols["image_id"], known.image_ids, "image_id", records, source)
    return Detections(
        image_id=image_id,
        category_id=_check_ids(cols["category_id"], known.cat_ids, "category_id", records, source),
        score=cols["score"],
        bbox=_check_boxes(cols["bbox"], records, source) if iou_type == "bbox" else None,
        segmentation=(
            _check_segms(records, image_id, known.sizes, source) if iou_type == "segm" else None
        ),
    )


def detections_from_array(array: np.ndarray, known: KnownIds) -> Detections:
    """Rows ``[image_id, x, y, width, height, score, category_id]`` (faster-coco-eval's layout)."""
    array = np.asarray(array, dtype=np.float64)
    if array.size == 0:
        return empty_detections()
    if array.ndim != 2 or array.shape[1] != 7:
        raise ValueError(
            f"<array>: expected shape (N, 7) with columns {', '.join(NUMPY_COLUMNS)}, "
            f"got {array.shape}"
        )
    rows = _RowView(array)
    score = array[:, 5]
    i = _first(~np.isfinite(score))
    if i is not None:
        raise ValueError(f"<array>: record {i}: field 'score': not a finite number ({score[i]})")
    return Detections(
        image_id=_check_ids(array[:, 0], known.image_ids, "image_id", rows, "<array>"),
        category_id=_check_ids(array[:, 6], known.cat_ids, "category_id", rows, "<array>"),
        score=score.copy(),
        bbox=_check_boxes(array[:, 1:5].copy(), rows, "<array>"),
    )


class _RowView:
    """Lets error messages index an (N, 7) array like a list of records."""

    def __init__(self, array: np.ndarray) -> None:
        self.array = array

    def __getitem__(self, i: int) -> dict[str, Any]:
        row = self.array[i].tolist()
        rec = dict(zip(NUMPY_COLUMNS, row, strict=True))
        rec["bbox"] = row[1:5]
        return rec


# ---------------------------------------------------------------- files


def expand_paths(spec: str | os.PathLike | Sequence[str | os.PathLike]) -> list[Path]:
    """A path, a glob pattern (``dets_rank*.json``) or a list of either -> existing files."""
    specs = [spec] if isinstance(spec, str | os.PathLike) else list(spec)
    paths: list[Path] = []
    for s in specs:
        s = os.fspath(s)
        if any(ch in s for ch in "*?["):
            matches = sorted(globlib.glob(s))
            if not matches:
                raise FileNotFoundError(f"{s}: no detection file matches this pattern")
            paths.extend(Path(m) for m in matches)
        elif not os.path.isfile(s):
            raise FileNotFoundError(f"{s}: detection file not found")
        else:
            paths.append(Path(s))
    return paths


def top_k_per_image(image_id: np.ndarray, score: np.ndarray, k: int) -> np.ndarray:
    """Indices of the ``k`` highest-scored detections of every image, in input order.

    Ties keep the earlier detection (the LVIS API sorts each image's list stably). Vectorised:
    sort by (image, -score), rank inside each image's run, keep rank < k.

    Args:
        image_id: (N,). score: (N,).

    Returns:
        (M,) sorted indices, M <= N.
    """
    n = image_id.shape[0]
    if n == 0:
        return np.zeros(0, dtype=np.int64)
    order = np.argsort(-score, kind="stable")
    order = order[np.argsort(image_id[order], kind="stable")]
    sorted_img = image_id[order]
    starts = np.r_[True, sorted_img[1:] != sorted_img[:-1]]
    run_start = np.maximum.accumulate(np.where(starts, np.arange(n), 0))
    rank = np.arange(n) - run_start
    return np.sort(order[rank < k])


def cap_per_image(dets: Detections, k: int | None) -> Detections:
    if k is None or len(dets) == 0:
        return dets
    keep = top_k_per_image(dets.image_id, dets.score, k)
    return dets if keep.shape[0] == len(dets) else dets.select(keep)


def load_detections(
    dets: DetectionsInput,
    known: KnownIds,
    iou_type: str = "bbox",
    max_per_image: int | None = None,
) -> Detections:
    """Read and validate detections from any supported input, merged in order.

    With ``max_per_image``, each file is capped to its top-k per image as it is read (the top-k
    of the union is the top-k of the per-file top-ks), then the merge is capped again.

    Args:
        dets: a path, glob, list of paths, list of record dicts, or (N, 7) array.
        known: ids and image sizes of the ground truth.
        iou_type: 'bbox' or 'segm'.
        max_per_image: keep the top-k per image; None keeps all.
    """
    if isinstance(dets, np.ndarray):
        if iou_type != "bbox":
            raise ValueError("<array>: an (N, 7) array holds boxes only; use iou_type='bbox'")
        return cap_per_image(detections_from_array(dets, known), max_per_image)
    if isinstance(dets, list) and (not dets or not isinstance(dets[0], str | os.PathLike)):
        parts = [
            cap_per_image(detections_from_records(dets, "<list>", iou_type, known), max_per_image)
        ]
    else:
        parts = []
        for path in expand_paths(dets):
            records = read_json(path)
            part = detections_from_records(records, str(path), iou_type, known)
            del records  # the dicts of one file are freed before the next is read
            parts.append(cap_per_image(part, max_per_image))
    if len(parts) == 1:
        return parts[0]  # already capped
    return cap_per_image(Detections.concat(parts), max_per_image)


def iter_records(dets: Detections, iou_type: str) -> Iterable[dict[str, Any]]:
    """COCO results records of ``dets`` (generated one by one)."""
    cols = zip(dets.image_id.tolist(), dets.category_id.tolist(), dets.score.tolist(), strict=True)
    for i, (img, cat, score) in enumerate(cols):
        rec: dict[str, Any] = {"image_id": img, "category_id": cat, "score": score}
        if dets.bbox is not None:
            rec["bbox"] = dets.bbox[i].tolist()
        if iou_type == "segm" and dets.segmentation is not None:
            rec["segmentation"] = dets.segmentation[i]
        yield rec


def save_detections(dets: Detections, path: str | os.PathLike, iou_type: str = "bbox") -> Path:
    """Write COCO results json atomically, one record at a time (no full list in memory)."""

    def _write(tmp: str) -> None:
        with open(tmp, "w") as fh:
            fh.write("[")
            for i, rec in enumerate(iter_records(dets, iou_type)):
                fh.write(("," if i else "") + "\n" + json.dumps(rec))
            fh.write("\n]\n")

    return atomic_write(path, _write)


def masks_to_rle(dets: Detections, sizes: dict[int, tuple[int, int]]) -> list[dict]:
    """Compressed RLEs of the masks (polygons and uncompressed RLEs are converted).

    Args:
        sizes: {image_id: (height, width)} from the ground truth.
    """
    return [
        mask_utils.segmToRle(segm, sizes[img][1], sizes[img][0])
        for img, segm in zip(dets.image_id.tolist(), dets.segmentation, strict=True)
    ]
