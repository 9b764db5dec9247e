"""Fine-tuning data: images + targets with a seeded horizontal flip, RFS or uniform sampling."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torchvision.transforms.v2 import functional as F

from drcl.config import Config
from drcl.data.coco import CocoIndex
from drcl.data.dataset import DetectionDataset, collate
from drcl.data.pretrain import SamplerEpochData, skipped_id
from drcl.engine.distributed import DistInfo
from drcl.engine.trainer import iters_per_epoch
from drcl.sampling.drb import DRBSample, DynamicRebalancingSampler, repeat_factors_from_image_counts


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


def build_finetune_data(cfg: Config, info: DistInfo) -> tuple[DetectionEpochData, CocoIndex]:
    """Training data of ``drcl finetune``: RFS at image level when ``finetune.rfs``."""
    index = CocoIndex.from_file(cfg.data.train_ann)
    images_dir = Path(cfg.data.train_images)
    if not images_dir.is_dir():
        raise FileNotFoundError(f"data.train_images: image folder {images_dir} does not exist")
    with_masks = cfg.finetune.arch == "mask_rcnn"
    images = DetectionDataset(
        None, images_dir, with_masks=with_masks, on_error=cfg.data.on_error, index=index
    )
    if cfg.finetune.rfs:
        labels = index.image_labels()
        factors = repeat_factors_from_image_counts(
            (labels.offsets, labels.labels),
            len(labels),
            cfg.finetune.rfs_threshold,
            index.num_classes,
        ).image
    else:
        factors = np.ones(len(images))
    sampler = DynamicRebalancingSampler(
        factors,
        seed=cfg.train.seed,
        dynamic=False,
        alpha_start=0.0,
        num_replicas=info.world_size,
        rank=info.rank,
        with_context=True,
    )
    per_rank = cfg.train.batch_size // info.world_size
    ipe = iters_per_epoch(len(images), cfg.train.batch_size)
    data = DetectionEpochData(
        FlipDataset(images), sampler, per_rank, ipe, cfg.data.num_workers, collate_fn=collate
    )
    return data, index
