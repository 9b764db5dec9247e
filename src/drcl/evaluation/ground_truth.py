"""Checks of a ground-truth json before evaluation: required keys (one clear error instead of a
KeyError from inside faster-coco-eval) and ids that point nowhere (warned about, then left out,
so that an unknown id can never alias onto another class in the federated pre-filter)."""

from __future__ import annotations

import logging
from typing import Any

logger = logging.getLogger(__name__)

ID_LISTS = ("neg_category_ids", "not_exhaustive_category_ids")


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _first_bad(records: list, name: str, kind: str, key: str, ok: Any, want: str) -> None:
    for i, rec in enumerate(records):
        if not isinstance(rec, dict):
            raise ValueError(f"{name}: {kind} {i}: expected an object, got {type(rec).__name__}")
        if key not in rec:
            raise ValueError(f"{name}: {kind} {i}: missing required key '{key}'")
        if not ok(rec[key]):
            raise ValueError(f"{name}: {kind} {i}: field '{key}': {want}, got {rec[key]!r}")


def _is_box(v: Any) -> bool:
    return (
        isinstance(v, list | tuple)
        and len(v) == 4
        and all(isinstance(x, int | float) and not isinstance(x, bool) for x in v)
    )


def validate_ground_truth(data: dict[str, Any], name: str, iou_type: str = "bbox") -> None:
    """Raise ``ValueError`` naming file, record (position) and field for the first record that
    lacks what evaluation reads: ``images[].id``; ``categories[].id``; ``annotations[].image_id,
    category_id, bbox`` (and ``segmentation`` for ``iou_type='segm'``)."""
    _first_bad(data["images"], name, "image", "id", _is_int, "must be an integer")
    _first_bad(data["categories"], name, "category", "id", _is_int, "must be an integer")
    anns = data["annotations"]
    for key in ("image_id", "category_id"):
        _first_bad(anns, name, "annotation", key, _is_int, "must be an integer")
    _first_bad(anns, name, "annotation", "bbox", _is_box, "must be [x, y, w, h] numbers")
    if iou_type == "segm":
        _first_bad(anns, name, "annotation", "segmentation", lambda v: True, "")
    for i, im in enumerate(data["images"]):
        for key in ID_LISTS:
            ids = im.get(key, [])
            if not (isinstance(ids, list) and all(_is_int(c) for c in ids)):
                raise ValueError(f"{name}: image {i}: field '{key}': must be a list of ints")


def drop_unknown_ids(data: dict[str, Any], name: str) -> dict[str, Any]:
    """A copy of ``data`` without annotations whose image or category is not in the json and
    without unknown ids in the LVIS id lists; one warning per kind names the count and examples.

    ``data check`` reports these as errors; evaluation warns and leaves them out.
    """
    cat_ids = {c["id"] for c in data["categories"]}
    image_ids = {im["id"] for im in data["images"]}
    anns = data["annotations"]
    bad_cat = [a["category_id"] for a in anns if a["category_id"] not in cat_ids]
    bad_img = [a["image_id"] for a in anns if a["image_id"] not in image_ids]
    if bad_cat or bad_img:
        anns = [a for a in anns if a["category_id"] in cat_ids and a["image_id"] in image_ids]
    _warn(name, "annotations with an unknown category_id", bad_cat)
    _warn(name, "annotations with an unknown image_id", bad_img)
    images, bad_lists = data["images"], []
    for key in ID_LISTS:
        bad_lists += [c for im in images for c in im.get(key, []) if c not in cat_ids]
    if bad_lists:
        images = [
            {**im, **{k: [c for c in im[k] if c in cat_ids] for k in ID_LISTS if k in im}}
            for im in images
        ]
    _warn(name, "unknown category ids in neg_category_ids / not_exhaustive_category_ids", bad_lists)
    return dict(data, annotations=anns, images=images)


def _warn(name: str, what: str, ids: list[int]) -> None:
    if ids:
        examples = ", ".join(str(i) for i in sorted(set(ids))[:3])
        logger.warning(
            "%s: %d %s (e.g. %s); left out of the evaluation (run `drcl data check`)",
            name,
            len(ids),
            what,
            examples,
        )
