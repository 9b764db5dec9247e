"""Fine-tuning data: images + targets with a seeded horizontal flip (built by
``drcl.finetune.runner.build_finetune_data`` with RFS or uniform sampling).

Crowd annotations (``iscrowd=1``) are left out of the training targets, as detectron2's dataset
mapper and torchvision's reference scripts do: torchvision's Faster / Mask R-CNN have no ignore
regions, and a crowd box trained as an object teaches the detector one box around a group.
Evaluation keeps them (faster-coco-eval treats them as ignore regions).
"""

from __future__ import annotations

import torch
from torchvision.transforms.v2 import functional as F

from drcl.data.dataset import DetectionDataset, skipped_id
from drcl.engine.epoch_data import SamplerEpochData
from drcl.sampling.drb import DRBSample
from drcl.transforms.views import hflip_boxes

# per-object entries of a target dict (the rest, e.g. image_id, are per image)
_PER_OBJECT = ("boxes", "labels", "iscrowd", "area", "masks")


def without_crowd(target: dict) -> dict:
    """``target`` without its ``iscrowd=1`` objects (boxes, labels, area, masks)."""
    crowd = target.get("iscrowd")
    if crowd is None or not bool(crowd.any()):
        return target
    keep = crowd == 0
    return {
        k: (v[keep] if k in _PER_OBJECT and torch.is_tensor(v) else v) for k, v in target.items()
    }


class FlipDataset(torch.utils.data.Dataset):
    """Wraps a :class:`DetectionDataset`; flips image, boxes and masks with p = 0.5, seeded by
    the sampler's per-sample seed (deterministic whatever the number of workers); drops crowd
    objects from the targets (:func:`without_crowd`) unless ``keep_crowd``."""

    def __init__(self, images: DetectionDataset, flip_p: float = 0.5, keep_crowd: bool = False):
        self.images, self.flip_p, self.keep_crowd = images, flip_p, keep_crowd

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, sample: DRBSample):
        image, target = self.images[int(sample.index)]
        if not self.keep_crowd:
            target = without_crowd(target)
        target = dict(target, skipped_id=skipped_id(self.images, int(sample.index), target))
        g = torch.Generator().manual_seed(int(sample.seed))
        if torch.rand((), generator=g).item() < self.flip_p:
            target = dict(target, boxes=hflip_boxes(target["boxes"], image.shape[-1]))
            image = F.horizontal_flip(image)
            if "masks" in target:
                target["masks"] = target["masks"].flip(-1)
        return image, target


def to_device_detection(batch, device: torch.device):
    images, targets = batch
    images = [im.to(device, non_blocking=True) for im in images]
    targets = [
        {k: (v.to(device) if torch.is_tensor(v) else v) for k, v in t.items()} for t in targets
    ]
    return images, targets


class DetectionEpochData(SamplerEpochData):
    def _note_skips(self, batch):
        images, targets = batch
        for t in targets:
            sid = t.pop("skipped_id")
            if sid >= 0:
                self.skipped_ids.add(sid)
        return images, targets

    def to_device(self, batch, device: torch.device):
        return to_device_detection(batch, device)

    def logs(self) -> dict[str, float]:
        return {"skipped_images": len(self.skipped_ids)} if self.skipped_ids else {}
