"""Small heads of the pre-training model.

- :class:`MLPHead`: projector and predictor, "Linear 256 -> BatchNorm -> ReLU -> Linear 256"
  (paper, Appendix A.1).
- The box head is torchvision's :class:`~torchvision.models.detection.faster_rcnn.TwoMLPHead`
  itself (keys ``fc6``/``fc7``), re-exported here, so it initialises the detector's box head.
- :class:`PixelDecoder` (AR) and :class:`FeaturePredictor` (SR): light conv heads, our choice.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchvision.models.detection.faster_rcnn import TwoMLPHead

__all__ = ["MLPHead", "TwoMLPHead", "PixelDecoder", "FeaturePredictor", "RoIPixelDecoder"]


class MLPHead(nn.Sequential):
    """Linear(in, hidden) -> BatchNorm1d -> ReLU -> Linear(hidden, out) (BYOL's projector).

    Args:
        in_dim: input features.
        hidden: hidden width (256 in the paper).
        out: output width (256 in the paper).
        norm_layer: ``nn.BatchNorm1d`` or ``nn.SyncBatchNorm`` (multi-GPU statistics).

    Shapes: ``(N, in_dim) -> (N, out)``; ``N >= 2`` in training mode (BatchNorm).
    """

    def __init__(
        self,
        in_dim: int,
        hidden: int = 256,
        out: int = 256,
        norm_layer: Callable[[int], nn.Module] = nn.BatchNorm1d,
    ) -> None:
        super().__init__(
            nn.Linear(in_dim, hidden),
            norm_layer(hidden),
            nn.ReLU(inplace=True),
            nn.Linear(hidden, out),
        )


class PixelDecoder(nn.Module):
    """AR decoder: P2 (stride 4) -> conv -> x4 upsampling -> normalised RGB.

    ``conv3x3(C, c) -> ReLU -> bilinear upsample to (H, W) -> conv3x3(c, c) -> ReLU ->
    conv1x1(c, 3)``. Upsampling before the last convs lets them sharpen the bilinear result.

    Shapes: ``p2: (B, C, H/4, W/4) -> (B, 3, H, W)``.
    """

    def __init__(self, in_channels: int, channels: int = 32) -> None:
        super().__init__()
        self.reduce = nn.Conv2d(in_channels, channels, 3, padding=1)
        self.refine = nn.Conv2d(channels, channels, 3, padding=1)
        self.to_rgb = nn.Conv2d(channels, 3, 1)

    def forward(self, p2: Tensor, size: tuple[int, int]) -> Tensor:
        x = F.relu(self.reduce(p2))
        x = F.interpolate(x, size=size, mode="bilinear", align_corners=False)
        return self.to_rgb(F.relu(self.refine(x)))


class RoIPixelDecoder(nn.Module):
    """AR object-centric option: RoI features (K, C, 14, 14) -> box crop RGB (K, 3, 28, 28).

    ``conv3x3 -> ReLU -> ConvTranspose 2x2/2 -> ReLU -> conv1x1(3)`` (the shape of the
    Mask R-CNN mask head, with an RGB output).
    """

    def __init__(self, in_channels: int, channels: int = 32) -> None:
        super().__init__()
        self.reduce = nn.Conv2d(in_channels, channels, 3, padding=1)
        self.up = nn.ConvTranspose2d(channels, channels, 2, stride=2)
        self.to_rgb = nn.Conv2d(channels, 3, 1)

    def forward(self, roi_features: Tensor) -> Tensor:
        return self.to_rgb(F.relu(self.up(F.relu(self.reduce(roi_features)))))


class FeaturePredictor(nn.Module):
    """SR predictor, shared over FPN levels: conv3x3 -> BN -> ReLU -> conv1x1 (C -> C).

    Shapes: each level ``(B, C, h, w) -> (B, C, h, w)``.
    """

    def __init__(
        self, channels: int, norm_layer: Callable[[int], nn.Module] = nn.BatchNorm2d
    ) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv2d(channels, channels, 3, padding=1, bias=False),
            norm_layer(channels),
            nn.ReLU(inplace=True),
            nn.Conv2d(channels, channels, 1),
        )

    def forward(self, features: list[Tensor]) -> list[Tensor]:
        # One call over all levels would need equal sizes; the levels differ, so loop (4 calls).
        return [self.net(f) for f in features]


def masked_rows(head: nn.Module, x: Tensor, valid: Tensor) -> Tensor:
    """Apply a BatchNorm head to the valid rows only, so padding rows do not bias its statistics.

    Args:
        head: module mapping ``(n, D_in) -> (n, D_out)``.
        x: ``(N, D_in)`` all rows (padding included).
        valid: ``(N,)`` bool.

    Returns:
        ``(N, D_out)``: head outputs at valid rows, zeros elsewhere. With fewer than two valid rows
        (BatchNorm cannot train on one) the head runs on all rows instead, so the graph and any
        collective calls (SyncBN) stay the same on every rank; callers mask the result anyway.
    """
    if int(valid.sum()) < 2:
        return head(x) * valid[:, None].to(x.dtype)
    out_valid = head(x[valid])
    out = out_valid.new_zeros(x.shape[0], out_valid.shape[1])
    return out.index_copy(0, valid.nonzero().squeeze(1), out_valid)


def global_pool(x: Tensor) -> Tensor:
    """``(B, C, H, W) -> (B, C)`` average pooling (C5 for HCL)."""
    return torch.flatten(F.adaptive_avg_pool2d(x, 1), 1)
