"""Proposals: the boxes pre-training contrasts (paper A.1: from a class-agnostic detector).

File format: COCO results format, a json list of ``{"image_id", "bbox": [x, y, w, h], "score",
"category_id"}``; ``category_id`` is ``null`` for a box with no known class. Any class-agnostic
detector's output in that format can be used (``source=file``).
"""

from __future__ import annotations

import math
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torchvision.ops import box_convert, box_iou

from drcl.utils.io import atomic_write_json, read_json

Proposals = dict[int, tuple[np.ndarray, np.ndarray]]  # image_id -> (boxes (n,4) xyxy, labels (n,))


def gt_proposals(gt: dict[str, Any]) -> list[dict[str, Any]]:
    """Training boxes with their classes (``source=gt``); crowd boxes are left out."""
    out = []
    for ann in gt["annotations"]:
        if ann.get("iscrowd", 0):
            continue
        out.append(
            {
                "image_id": ann["image_id"],
                "bbox": [float(v) for v in ann["bbox"]],
                "score": 1.0,
                "category_id": ann["category_id"],
            }
        )
    return out


def _check_record(rec: Any, i: int, path: str, image_ids: set[int]) -> None:
    where = f"{path}: record {i}"
    if not isinstance(rec, dict):
        raise ValueError(f"{where}: expected an object, got {type(rec).__name__}")
    for key in ("image_id", "bbox"):
        if key not in rec:
            raise ValueError(f"{where}: missing field '{key}'")
    if rec["image_id"] not in image_ids:
        raise ValueError(f"{where}: field 'image_id': unknown image {rec['image_id']}")
    box = rec["bbox"]
    if not (
        isinstance(box, list) and len(box) == 4 and all(isinstance(v, int | float) for v in box)
    ):
        raise ValueError(f"{where}: field 'bbox': expected [x, y, w, h], got {box!r}")
    if not all(math.isfinite(v) for v in box) or box[2] <= 0 or box[3] <= 0:
        raise ValueError(f"{where}: field 'bbox': non-finite or non-positive size {box}")


def load_proposals(
    path: str | Path, gt: dict[str, Any], cat_id_to_label: dict[int, int]
) -> Proposals:
    """Read a proposals file into per-image arrays; labels are contiguous 1..C, 0 = unknown.

    Raises ValueError naming the file, record and field of the first bad record.
    """
    records = read_json(path)
    if not isinstance(records, list):
        raise ValueError(f"{path}: expected a json list of proposals (COCO results format)")
    image_ids = {img["id"] for img in gt["images"]}
    per_image: dict[int, list[tuple[list[float], int]]] = defaultdict(list)
    for i, rec in enumerate(records):
        _check_record(rec, i, str(path), image_ids)
        cat = rec.get("category_id")
        if cat is not None and cat not in cat_id_to_label:
            raise ValueError(f"{path}: record {i}: field 'category_id': unknown category {cat}")
        label = 0 if cat is None else cat_id_to_label[cat]
        per_image[rec["image_id"]].append((rec["bbox"], label))
    return {img_id: _to_arrays(items) for img_id, items in per_image.items()}


def _to_arrays(items: list[tuple[list[float], int]]) -> tuple[np.ndarray, np.ndarray]:
    xywh = np.asarray([b for b, _ in items], dtype=np.float32).reshape(-1, 4)
    xyxy = box_convert(torch.from_numpy(xywh), "xywh", "xyxy").numpy()
    return xyxy, np.asarray([label for _, label in items], dtype=np.int64)


def label_by_overlap(
    boxes: torch.Tensor, gt_boxes: torch.Tensor, gt_cats: torch.Tensor, iou: float = 0.5
) -> torch.Tensor:
    """Class of the best-overlapping ground truth when IoU >= ``iou``, else -1 (no class).

    Args:
        boxes: (N, 4) xyxy proposals. gt_boxes: (M, 4) xyxy. gt_cats: (M,) category ids.
    Returns:
        (N,) category ids, -1 where no ground truth overlaps enough.
    """
    if boxes.numel() == 0 or gt_boxes.numel() == 0:
        return torch.full((boxes.shape[0],), -1, dtype=torch.int64)
    best, idx = box_iou(boxes, gt_boxes).max(dim=1)
    return torch.where(best >= iou, gt_cats[idx].long(), torch.full_like(idx, -1))


def write_proposals(path: str | Path, records: list[dict[str, Any]]) -> Path:
    return atomic_write_json(path, records)
