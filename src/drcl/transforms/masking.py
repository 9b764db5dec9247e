"""Random patch masking for SR — semantic reconstruction (SPEC "SR", our choice).

A view is cut into ``patch`` x ``patch`` cells; exactly ``round(ratio * n_cells)`` of them are
masked (Python ``round``, half to even), chosen uniformly by a ``torch.Generator``. The online
encoder sees the masked view; the EMA target sees the whole one.
"""

from __future__ import annotations

import math

import torch


def random_patch_mask(
    h: int,
    w: int,
    patch: int = 32,
    ratio: float = 0.5,
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Draw a patch mask.

    Args:
        h: image height in pixels.
        w: image width in pixels.
        patch: cell side in pixels (``pretrain.sr.patch``); a partial last row/column of cells
            is one cell too.
        ratio: fraction of cells masked (``pretrain.sr.ratio``), in [0, 1].
        generator: torch generator (same generator state, same mask).

    Returns:
        grid: (ceil(h / patch), ceil(w / patch)) bool, True = masked cell.
        pixels: (h, w) bool, True = masked pixel.
    """
    if patch < 1 or h < 1 or w < 1:
        raise ValueError(f"random_patch_mask: need h, w, patch >= 1, got {h}, {w}, {patch}")
    if not 0.0 <= ratio <= 1.0:
        raise ValueError(f"pretrain.sr.ratio: need a value in [0, 1], got {ratio}")
    gh, gw = math.ceil(h / patch), math.ceil(w / patch)
    n = gh * gw
    chosen = torch.randperm(n, generator=generator)[: round(ratio * n)]
    grid = torch.zeros(n, dtype=torch.bool)
    grid[chosen] = True
    grid = grid.view(gh, gw)
    pixels = grid.repeat_interleave(patch, 0).repeat_interleave(patch, 1)[:h, :w]
    return grid, pixels


def apply_patch_mask(
    image: torch.Tensor, mask: torch.Tensor, fill: float | torch.Tensor = 0.0
) -> torch.Tensor:
    """Replace masked pixels by ``fill`` (0 = the ImageNet mean after normalisation).

    Args:
        image: (C, H, W) or (B, C, H, W).
        mask: (H, W) or (B, H, W) bool pixel mask, True = masked.
        fill: a scalar or a (C,) per-channel value.

    Returns:
        A new tensor shaped like ``image``.
    """
    if mask.dtype != torch.bool or mask.shape[-2:] != image.shape[-2:]:
        raise ValueError(
            f"apply_patch_mask: mask must be bool with the image's (H, W) = "
            f"{tuple(image.shape[-2:])}, got {mask.dtype} {tuple(mask.shape)}"
        )
    if mask.ndim == 3 and (image.ndim != 4 or mask.shape[0] != image.shape[0]):
        raise ValueError("apply_patch_mask: a (B, H, W) mask needs a (B, C, H, W) image")
    fill_t = torch.as_tensor(fill, dtype=image.dtype, device=image.device)
    if fill_t.ndim == 1:
        fill_t = fill_t.view(-1, 1, 1)  # per channel
    return torch.where(mask.unsqueeze(-3), fill_t, image)
