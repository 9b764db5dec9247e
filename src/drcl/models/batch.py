"""The pre-training batch: what :class:`~drcl.models.drcl.DRCLModel` and
:class:`~drcl.models.box_domain.BoxDomainModel` take, built by
:func:`drcl.pretrain.dataset.collate_views`.

Tensors are fields of their own, with their shapes; what the data noted about the batch (the
images it replaced) is kept apart in ``skipped_ids`` and never moves to a device.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch
from torch import Tensor

# the tensors every batch has; the optional ones are None when the run does not use them
REQUIRED = ("view1", "view2", "boxes1", "boxes2", "box_valid", "box_labels")


@dataclass
class PretrainBatch:
    """B images, two views each, with the same K boxes carried into both views.

    Attributes:
        view1, view2: (B, 3, S, S) ImageNet-normalised views.
        boxes1, boxes2: (B, K, 4) xyxy in view pixels, box j of view 1 is box j of view 2;
            zero rows where ``box_valid`` is False.
        box_valid: (B, K) bool, the box survived the crops of both views (False: padding).
        box_labels: (B, K) int64, class 1..C, or 0 = unknown class or padding.
        mask: (B, ceil(S/patch), ceil(S/patch)) bool, True = masked patch of view 1 (SR, AR).
        masked_view1: (B, 3, S, S) view 1 with the masked patches zeroed.
        clean_view1: (B, 3, S, S) view 1 before photometric augmentation (AR's target).
        skipped_ids: image ids replaced by another image under ``data.on_error=skip``.
    """

    view1: Tensor
    view2: Tensor
    boxes1: Tensor
    boxes2: Tensor
    box_valid: Tensor
    box_labels: Tensor
    mask: Tensor | None = None
    masked_view1: Tensor | None = None
    clean_view1: Tensor | None = None
    skipped_ids: tuple[int, ...] = ()

    def tensors(self) -> dict[str, Tensor]:
        """The batch's tensors by field name (the ones that are set)."""
        return {
            f.name: v
            for f in dataclasses.fields(self)
            if isinstance(v := getattr(self, f.name), Tensor)
        }

    def to(self, device: torch.device | str, non_blocking: bool = False) -> PretrainBatch:
        """A copy with every tensor on ``device`` (``skipped_ids`` stays as it is)."""
        moved = {k: v.to(device, non_blocking=non_blocking) for k, v in self.tensors().items()}
        return dataclasses.replace(self, **moved)

    def pin_memory(self) -> PretrainBatch:
        """Page-locked tensors (the DataLoader calls this with ``pin_memory=True``)."""
        return dataclasses.replace(self, **{k: v.pin_memory() for k, v in self.tensors().items()})
