"""``source=detector``: a class-agnostic torchvision Faster R-CNN trained on the training boxes,
run over the pre-training images (paper A.1: boxes from a class-agnostic detector).

Each kept proposal takes the class of the ground-truth box it overlaps with IoU >= 0.5
(``pretrain.proposals.label_iou``), else none (``category_id: null``).
"""

from __future__ import annotations

import copy
from typing import Any

import torch
from torchvision.ops import box_convert

from drcl.data.coco import CocoIndex
from drcl.data.dataset import DetectionDataset, collate
from drcl.proposals.core import label_by_overlap


def class_agnostic_json(index: CocoIndex) -> dict[str, Any]:
    """The training json with every category merged into one class, ``object`` (id 1)."""
    data = copy.copy(dict(index.data))
    data["categories"] = [{"id": 1, "name": "object", "frequency": "f"}]
    data["annotations"] = [dict(a, category_id=1) for a in index.data["annotations"]]
    data["images"] = [
        {
            k: v
            for k, v in img.items()
            if k not in ("neg_category_ids", "not_exhaustive_category_ids")
        }
        for img in index.data["images"]
    ]
    return data


@torch.no_grad()
def detect_proposals(
    detector: torch.nn.Module,
    index: CocoIndex,
    image_dir: str,
    device: torch.device,
    *,
    batch_size: int,
    min_size: float,
    label_iou: float,
    on_error: str = "raise",
) -> list[dict[str, Any]]:
    """Run ``detector`` over every training image; returns COCO-results proposal records.

    Args:
        min_size: boxes narrower or lower than this (pixels) are dropped.
        label_iou: a box takes the class of a ground-truth box it overlaps this much.
        on_error: ``data.on_error`` for unreadable images.
    """
    dataset = DetectionDataset(None, image_dir, on_error=on_error, index=index)
    loader = torch.utils.data.DataLoader(dataset, batch_size=batch_size, collate_fn=collate)
    detector.eval()
    records: list[dict[str, Any]] = []
    for images, targets in loader:
        outputs = detector([im.to(device) for im in images])
        for out, tgt in zip(outputs, targets, strict=True):
            boxes = out["boxes"].cpu()
            wh = boxes[:, 2:] - boxes[:, :2]
            keep = (wh >= min_size).all(dim=1)
            boxes, scores = boxes[keep], out["scores"].cpu()[keep]
            gt_cats = torch.as_tensor(
                [index.label_to_cat_id[int(lb)] for lb in tgt["labels"]], dtype=torch.int64
            )
            cats = label_by_overlap(boxes, tgt["boxes"], gt_cats, label_iou)
            # float64: w = x1 - x0 of the float32 corners, exactly (the json's numbers)
            xywh = box_convert(boxes.to(torch.float64), "xyxy", "xywh")
            for box, score, cat in zip(xywh.tolist(), scores.tolist(), cats.tolist(), strict=True):
                records.append(
                    {
                        "image_id": int(tgt["image_id"]),
                        "bbox": box,
                        "score": score,
                        "category_id": None if cat < 0 else cat,
                    }
                )
    return records
