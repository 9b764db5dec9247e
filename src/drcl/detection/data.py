"""Fine-tuning data: images + targets with a seeded horizontal flip (built by
``drcl.finetune.runner.build_finetune_data`` with RFS or uniform sampling)."""

from __future__ import annotations

import torch
from torchvision.transforms.v2 import functional as F

from drcl.data.dataset import DetectionDataset, skipped_id
from drcl.engine.epoch_data import SamplerEpochData
from drcl.sampling.drb import DRBSample


class FlipDataset(torch.utils.data.Dataset):
    """Wraps a :class:`DetectionDataset`; flips image, boxes and masks with p = 0.5, seeded by
    the sampler's per-sample seed (deterministic whatever the number of workers)."""

    def __init__(self, images: DetectionDataset, flip_p: float = 0.5):
        self.images, self.flip_p = images, flip_p

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, sample: DRBSample):
        image, target = self.images[int(sample.index)]
        target = dict(target, skipped_id=skipped_id(self.images, int(sample.index), target))
        g = torch.Generator().manual_seed(int(sample.seed))
        if torch.rand((), generator=g).item() < self.flip_p:
            w = image.shape[-1]
            image = F.horizontal_flip(image)
            boxes = target["boxes"].clone()
            boxes[:, [0, 2]] = w - target["boxes"][:, [2, 0]]
            target = dict(target, boxes=boxes)
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
