"""Dual reconstruction losses of 2DRCL (our formulation of the paper's AR and SR).

- AR, appearance reconstruction: L1 between predicted and true normalised RGB, optionally only
  where a mask is set ("natural appearance").
- SR, semantic reconstruction: ``1 - cos`` between the online prediction from the masked image
  and the target features of the whole image, at masked positions only ("internal semantic
  consistency": the masked image's representation reconstructs the full image's).

Both return 0 with the autograd graph kept when nothing is selected, so every parameter still
receives a (zero) gradient, as DistributedDataParallel requires.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def resize_mask(mask: Tensor, size: tuple[int, int]) -> Tensor:
    """Nearest-neighbour resize of a bool mask ``(B, h, w) -> (B, *size)``.

    With view size S, patch P and a level of stride s <= P dividing P, every cell of the level
    lies in exactly one patch, so nearest sampling is exact.
    """
    if mask.dim() != 3:
        raise ValueError(f"mask must be (B, h, w), got {tuple(mask.shape)}")
    if tuple(mask.shape[-2:]) == tuple(size):
        return mask.bool()
    return F.interpolate(mask[:, None].float(), size=size, mode="nearest")[:, 0] > 0.5


def pixel_l1_loss(pred: Tensor, target: Tensor, mask: Tensor | None = None) -> Tensor:
    """AR loss: mean absolute error over channels and (masked) pixels.

    ``L = sum_{b,c,y,x} m_byx |pred - target| / (C * sum m)``; ``m = 1`` everywhere without a mask.

    Args:
        pred: ``(B, C, H, W)`` predicted normalised RGB.
        target: ``(B, C, H, W)`` normalised RGB (no gradient needed).
        mask: optional ``(B, h, w)`` bool; resized (nearest) to ``(H, W)`` when coarser, e.g. a
            patch mask. ``True`` = pixel counted.

    Returns:
        scalar loss; 0 (graph kept) when the mask selects nothing.
    """
    if pred.shape != target.shape or pred.dim() != 4:
        raise ValueError(f"pred and target must be equal (B, C, H, W), got {tuple(pred.shape)}")
    err = (pred.float() - target.float()).abs()
    if mask is None:
        return err.mean()
    m = resize_mask(mask, tuple(pred.shape[-2:]))[:, None].to(err.dtype)
    return (err * m).sum() / (m.sum() * pred.shape[1]).clamp(min=1.0)


def patch_normalize(target: Tensor, patch: int, eps: float = 1e-6) -> Tensor:
    """MAE's ``norm_pix_loss`` target: each ``patch x patch`` cell normalised to mean 0, var 1.

    ``t' = (t - mean) / sqrt(var + eps)``, mean and (unbiased, as MAE's ``var(dim=-1)``) variance
    over the cell's ``C * patch * patch`` values (He et al., "Masked Autoencoders Are Scalable
    Vision Learners", 2022, Sec. 4 / ``models_mae.py``).

    Args:
        target: ``(B, C, H, W)`` with H and W multiples of ``patch``.
        patch: cell side in pixels.
        eps: added to the variance (MAE: 1e-6).

    Returns:
        ``(B, C, H, W)`` normalised target.
    """
    b, c, h, w = target.shape
    if patch < 1 or h % patch or w % patch:
        raise ValueError(
            f"patch_normalize: image {h}x{w} is not a whole number of {patch}-px patches "
            "(pretrain.views.size must be a multiple of pretrain.sr.patch for ar.norm_pix)"
        )
    gh, gw = h // patch, w // patch
    cells = target.float().reshape(b, c, gh, patch, gw, patch).permute(0, 2, 4, 1, 3, 5)
    cells = cells.reshape(b, gh, gw, -1)
    mean, var = cells.mean(-1, keepdim=True), cells.var(-1, keepdim=True)
    cells = (cells - mean) / (var + eps).sqrt()
    cells = cells.reshape(b, gh, gw, c, patch, patch).permute(0, 3, 1, 4, 2, 5)
    return cells.reshape(b, c, h, w)


def semantic_reconstruction_loss(pred: list[Tensor], target: list[Tensor], mask: Tensor) -> Tensor:
    """SR loss: ``1 - cos`` over channels, at masked positions, averaged per level then over levels.

    ``L_l = sum_{b,y,x} m_byx (1 - cos(pred_l[b,:,y,x], target_l[b,:,y,x])) / sum m`` and
    ``L = mean_l L_l``. Averaging per level first keeps P2 (16x the positions of P4) from
    dominating.

    Args:
        pred: per level ``(B, C, h_l, w_l)``, online predictions from the masked image.
        target: per level ``(B, C, h_l, w_l)``, target features of the unmasked image.
        mask: ``(B, h, w)`` bool patch mask, ``True`` = masked; resized (nearest) to each level.

    Returns:
        scalar loss; 0 (graph kept) when no position is masked.
    """
    if len(pred) != len(target) or not pred:
        raise ValueError("pred and target need the same, non-zero number of levels")
    losses = []
    for p, t in zip(pred, target, strict=True):
        if p.shape != t.shape:
            raise ValueError(f"level shapes differ: {tuple(p.shape)} vs {tuple(t.shape)}")
        m = resize_mask(mask, tuple(p.shape[-2:])).to(torch.float32)
        cos = F.cosine_similarity(p.float(), t.float(), dim=1)  # (B, h, w)
        losses.append(((1.0 - cos) * m).sum() / m.sum().clamp(min=1.0))
    return torch.stack(losses).mean()
