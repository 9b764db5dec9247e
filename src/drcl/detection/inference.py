"""Detector inference to COCO results json, and merging of per-rank shards.

Each rank runs over its shard of the dataset (images ``rank::world_size``) and writes its own
json; :func:`merge_detections` joins the shards on disk. Records are COCO results:
``{"image_id", "category_id", "bbox": [x, y, w, h], "score"}`` (+ ``"segmentation"`` as
compressed RLE for Mask R-CNN), with the dataset's original image and category ids.
"""

from __future__ import annotations

import os
from collections.abc import Collection, Iterable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn
from torchvision.ops import box_convert

from drcl.data.categories import CategoryTable, labels_to_category_ids
from drcl.utils.io import atomic_write_json, read_json
from drcl.utils.weights import LoadReport, load_into, read_state_dict

try:  # pycocotools is the reference; faster-coco-eval ships the same C API (a hard dependency)
    from pycocotools import mask as mask_utils
except ImportError:  # pragma: no cover - depends on the environment
    from faster_coco_eval.core import mask as mask_utils

__all__ = [
    "detections_to_records",
    "load_detector_weights",
    "merge_detections",
    "predict_batches",
    "rank_file",
    "run_inference",
]

MASK_THRESHOLD = 0.5  # torchvision / detectron2 binarise mask probabilities at 0.5


def rank_file(path: str | os.PathLike, rank: int, world_size: int) -> Path:
    """``dets.json`` for one process, ``dets.rank{r}.json`` for each of several."""
    path = Path(path)
    return path if world_size == 1 else path.with_name(f"{path.stem}.rank{rank}{path.suffix}")


def _rle(masks: Tensor) -> list[dict]:
    """(K, 1, H, W) probabilities -> K compressed RLEs with str counts (json-serialisable)."""
    binary = (masks[:, 0] >= MASK_THRESHOLD).to(torch.uint8).cpu().numpy()
    rles = mask_utils.encode(np.asfortranarray(binary.transpose(1, 2, 0)))
    for rle in rles:
        rle["counts"] = rle["counts"].decode("ascii")
    return rles


def detections_to_records(
    output: dict[str, Tensor],
    image_id: int,
    categories: CategoryTable,
    keep_ids: Collection[int] | None = None,
) -> list[dict[str, Any]]:
    """One image's detector output -> COCO results records.

    Args:
        output: ``boxes (K, 4)`` xyxy in original image pixels, ``scores (K,)``, ``labels (K,)``
            in 1..C, optional ``masks (K, 1, H, W)`` probabilities.
        image_id: the image's id in the annotation json.
        categories: the model's training categories; labels become ids through
            :func:`~drcl.data.categories.labels_to_category_ids` only.
        keep_ids: category ids to keep (those of the evaluated file, see
            :func:`~drcl.data.categories.match_categories`); None keeps all.
    """
    cat_ids = labels_to_category_ids(output["labels"], categories).tolist()
    keep = [k for k, c in enumerate(cat_ids) if keep_ids is None or c in keep_ids]
    boxes = output["boxes"].detach().cpu().double()
    xywh = box_convert(boxes, "xyxy", "xywh").tolist()
    scores = output["scores"].detach().cpu().tolist()
    records = [
        {
            "image_id": int(image_id),
            "category_id": int(cat_ids[k]),
            "bbox": [round(v, 3) for v in xywh[k]],
            "score": float(scores[k]),
        }
        for k in keep
    ]
    if "masks" in output and records:
        for rec, rle in zip(records, _rle(output["masks"][keep]), strict=True):
            rec["segmentation"] = rle
    return records


Batch = tuple[list[Tensor], list[dict[str, Any]]]


def predict_batches(
    model: nn.Module, batches: Iterable[Batch], device: str | torch.device
) -> Iterator[tuple[list[dict[str, Any]], list[dict[str, Tensor]]]]:
    """The one inference loop (fine-tuning's evaluation, ``drcl predict`` / ``drcl test``).

    Args:
        model: a torchvision detector in eval mode, on ``device``.
        batches: ``(images, targets)``: images (3, H, W) float in [0, 1], targets with
            ``image_id`` (anything else is passed through).
        device: where the images go.

    Yields:
        ``(targets, outputs)`` per batch; outputs as torchvision's detectors return them
        (boxes in original image pixels).
    """
    with torch.inference_mode():
        for images, targets in batches:
            yield targets, model([img.to(device) for img in images])


@torch.inference_mode()
def run_inference(
    model: nn.Module,
    dataset,
    batch_size: int,
    device: str | torch.device,
    out_path: str | os.PathLike,
    rank: int = 0,
    world_size: int = 1,
    num_workers: int = 0,
    *,
    categories: CategoryTable,
    keep_ids: Collection[int] | None = None,
) -> Path:
    """Run the detector on this rank's shard and write its COCO results json.

    Args:
        model: a torchvision detector (unwrapped from DDP), put in eval mode here.
        dataset: yields ``(image (3, H, W) float [0, 1], target with image_id)``.
        batch_size: images per forward pass.
        device: where the model runs.
        out_path: the json written (use :func:`rank_file` for one name per rank).
        rank, world_size: this process takes images ``rank, rank + world_size, ...``.
        num_workers: DataLoader workers.
        categories: the model's training categories (never the dataset's own list: a file
            with other categories would shift every label).
        keep_ids: category ids written (the evaluated file's); None writes all.

    Returns:
        ``out_path``.
    """
    from drcl.data.dataset import collate

    keep = None if keep_ids is None else set(keep_ids)
    shard = torch.utils.data.Subset(dataset, range(rank, len(dataset), world_size))
    loader = torch.utils.data.DataLoader(
        shard, batch_size=batch_size, num_workers=num_workers, collate_fn=collate
    )
    model.eval().to(device)
    records: list[dict[str, Any]] = []
    for targets, outputs in predict_batches(model, loader, device):
        for out, tgt in zip(outputs, targets, strict=True):
            records.extend(detections_to_records(out, int(tgt["image_id"]), categories, keep))
    return atomic_write_json(out_path, records)


def merge_detections(paths: list[str | os.PathLike], out: str | os.PathLike) -> int:
    """Concatenate per-rank results files into ``out``; returns the number of records.

    Each image's detections come from one file only (the first that holds the image), so a
    shard duplicated by padding cannot double-count. Records are sorted by image id, then by
    decreasing score, so the merged file does not depend on the number of ranks.
    """
    seen: set[int] = set()
    merged: list[dict[str, Any]] = []
    for path in paths:
        records = read_json(path)
        if not isinstance(records, list):
            raise ValueError(f"{path}: expected a list of COCO results records")
        images = {int(r["image_id"]) for r in records}
        merged.extend(r for r in records if int(r["image_id"]) not in seen)
        seen |= images
    merged.sort(key=lambda r: (int(r["image_id"]), -float(r["score"])))
    atomic_write_json(out, merged)
    return len(merged)


def load_detector_weights(model: nn.Module, checkpoint: str | os.PathLike) -> LoadReport:
    """Load a full detector state (strict): safetensors or a torch checkpoint, as
    :func:`~drcl.utils.weights.read_state_dict` reads them (``'model'`` key allowed).

    Raises:
        ValueError: keys or shapes do not match the model built from the config (the message
            names the first mismatched shape, or a few missing and unexpected keys).
    """
    hint = "the detector built from the config: number of classes? model.* sizes?"
    state = read_state_dict(checkpoint)
    return load_into(model, state, strict=True, source=str(checkpoint), hint=hint)
