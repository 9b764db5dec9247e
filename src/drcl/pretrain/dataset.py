"""The pre-training data path: DRB-sampled images -> K boxes -> two views + a masked copy.

Each sample is addressed by a :class:`~drcl.sampling.drb.DRBSample` ``(index, alpha, seed)``
from the sampler, so box selection and augmentation are deterministic for a seed and epoch,
whatever the number of DataLoader workers.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from drcl.data.dataset import DetectionDataset, skipped_id
from drcl.models.batch import PretrainBatch
from drcl.proposals.core import Proposals
from drcl.sampling.drb import DRBSample, select_boxes
from drcl.transforms.masking import apply_patch_mask, random_patch_mask
from drcl.transforms.views import TwoViewTransform

_EMPTY = (np.zeros((0, 4), np.float32), np.zeros((0,), np.int64))


class PretrainDataset(torch.utils.data.Dataset):
    """Two augmented views of an image with its K selected boxes carried into both.

    Args:
        images: the training images (its ``on_error`` decides raise vs skip).
        proposals: ``{image_id: (boxes (n, 4) xyxy, labels (n,) 1..C or 0 = unknown)}``.
        views: the two-view transform (``pretrain.views``).
        class_factors: (C + 1,) instance-level class repeat factors r_c (index 0: unlabeled).
        boxes_per_image: K (paper A.1: 8).
        mask_patch, mask_ratio: SR masking of view 1 (``pretrain.sr``).
    """

    def __init__(
        self,
        images: DetectionDataset,
        proposals: Proposals,
        views: TwoViewTransform,
        class_factors: np.ndarray,
        boxes_per_image: int = 8,
        mask_patch: int = 32,
        mask_ratio: float = 0.5,
    ):
        self.images, self.proposals, self.views = images, proposals, views
        self.class_factors = torch.as_tensor(class_factors, dtype=torch.float64)
        self.k, self.mask_patch, self.mask_ratio = boxes_per_image, mask_patch, mask_ratio

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, sample: DRBSample) -> tuple[dict[str, torch.Tensor], int]:
        """The sample's tensors (the fields of :class:`~drcl.models.batch.PretrainBatch`,
        without the batch dimension) and the id of the image it replaced (-1: none)."""
        image, target = self.images[int(sample.index)]
        skipped = skipped_id(self.images, int(sample.index), target)
        boxes, labels = self.proposals.get(int(target["image_id"]), _EMPTY)
        boxes, labels = torch.as_tensor(boxes), torch.as_tensor(labels)
        chosen, g = draw_boxes(labels, sample, self.k, self.class_factors)
        pair = self.views(image, boxes[chosen], generator=g)
        v1, v2 = pair.views
        size = v1.image.shape[-1]
        grid, pixels = random_patch_mask(size, size, self.mask_patch, self.mask_ratio, g)
        tensors = {
            "view1": v1.image,
            "view2": v2.image,
            "boxes1": _pad(v1.boxes, self.k, 4),
            "boxes2": _pad(v2.boxes, self.k, 4),
            "box_valid": _pad(pair.valid, self.k),
            "box_labels": _pad(labels[chosen], self.k),
            "mask": grid,
            "masked_view1": apply_patch_mask(v1.image, pixels),
            "clean_view1": v1.clean,  # AR target: view 1 before photometric augmentation
        }
        return tensors, int(skipped)


@dataclass
class DrawnLabels:
    """A batch of :class:`BoxDrawDataset`: the labels of the boxes its samples drew.

    Attributes:
        labels: (n,) int64, the drawn boxes of all samples, in order (0 = unknown class).
        skipped_ids: images replaced under ``data.on_error=skip`` (none: no image is read).
    """

    labels: torch.Tensor
    skipped_ids: tuple[int, ...] = ()


class BoxDrawDataset(torch.utils.data.Dataset):
    """The K boxes each sample of the pre-training stream draws, without reading its image:
    the first draw of the sample's generator, as :class:`PretrainDataset` (:func:`draw_boxes`).

    Args:
        index: the training annotations (:class:`~drcl.data.coco.CocoIndex`).
        proposals: ``{image_id: (boxes, labels)}`` as for :class:`PretrainDataset`.
        class_factors: (C + 1,) instance-level class repeat factors r_c.
        boxes_per_image: K.
    """

    def __init__(
        self, index: Any, proposals: Proposals, class_factors: np.ndarray, boxes_per_image: int
    ):
        self.index, self.proposals, self.k = index, proposals, boxes_per_image
        self.image_ids = list(index.image_ids)
        self.class_factors = torch.as_tensor(class_factors, dtype=torch.float64)

    def __len__(self) -> int:
        return len(self.image_ids)

    def __getitem__(self, sample: DRBSample) -> torch.Tensor:
        _, labels = self.proposals.get(self.image_ids[int(sample.index)], _EMPTY)
        labels = torch.as_tensor(labels, dtype=torch.int64)
        return labels[draw_boxes(labels, sample, self.k, self.class_factors)[0]]


def collate_draws(samples: list[torch.Tensor]) -> DrawnLabels:
    return DrawnLabels(torch.cat(samples))


def draw_boxes(
    labels: torch.Tensor, sample: DRBSample, k: int, class_factors: torch.Tensor
) -> tuple[torch.Tensor, torch.Generator]:
    """The sample's K boxes: the first draw of its own generator (seeded by ``sample.seed``).

    Args:
        labels: (n,) labels of the image's proposals (0 = unknown class).
        sample: the sampler's draw (``seed``, ``alpha``).
        k: boxes per image (``pretrain.lcl.boxes_per_image``).
        class_factors: (C + 1,) float64 instance-level class repeat factors.

    Returns:
        ``(chosen, generator)``: (<= K,) indices into ``labels``, and the generator, which the
        views and the mask then continue (so a replay without images draws the same boxes).
    """
    g = torch.Generator().manual_seed(int(sample.seed))
    return select_boxes(labels, k, sample.alpha, class_factors, g), g


def _pad(x: torch.Tensor, k: int, width: int | None = None) -> torch.Tensor:
    """Pad the first dimension to ``k`` with zeros (False for bool)."""
    shape = (k,) if width is None else (k, width)
    out = torch.zeros(shape, dtype=x.dtype)
    out[: len(x)] = x[:k]
    return out


def collate_views(samples: list[tuple[dict[str, torch.Tensor], int]]) -> PretrainBatch:
    """:class:`PretrainDataset` samples -> one :class:`~drcl.models.batch.PretrainBatch`."""
    tensors = [t for t, _ in samples]
    stacked = {key: torch.stack([t[key] for t in tensors]) for key in tensors[0]}
    return PretrainBatch(**stacked, skipped_ids=tuple(i for _, i in samples if i >= 0))
