"""SR patch masking: exact ratio, pixel/grid agreement, determinism, application."""

from __future__ import annotations

import pytest
import torch

from drcl.transforms import apply_patch_mask, random_patch_mask


@pytest.mark.parametrize(
    ("h", "w", "patch", "ratio"),
    [(128, 128, 32, 0.5), (100, 70, 32, 0.5), (64, 96, 16, 0.3), (32, 32, 32, 1.0), (64, 64, 8, 0)],
)
def test_exact_ratio_and_pixel_grid_agree(h: int, w: int, patch: int, ratio: float) -> None:
    grid, pixels = random_patch_mask(h, w, patch, ratio, torch.Generator().manual_seed(0))
    gh, gw = -(-h // patch), -(-w // patch)
    assert grid.shape == (gh, gw) and pixels.shape == (h, w)
    assert int(grid.sum()) == round(ratio * gh * gw)
    ys, xs = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
    assert torch.equal(pixels, grid[ys // patch, xs // patch])


def test_deterministic_for_a_generator() -> None:
    a, _ = random_patch_mask(128, 128, 16, 0.5, torch.Generator().manual_seed(4))
    b, _ = random_patch_mask(128, 128, 16, 0.5, torch.Generator().manual_seed(4))
    c, _ = random_patch_mask(128, 128, 16, 0.5, torch.Generator().manual_seed(5))
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_apply_patch_mask_fills_only_masked_pixels() -> None:
    image = torch.rand(2, 3, 64, 64)
    _, pixels = random_patch_mask(64, 64, 32, 0.5, torch.Generator().manual_seed(0))
    out = apply_patch_mask(image, pixels, fill=torch.tensor([1.0, 2.0, 3.0]))
    assert out.shape == image.shape and not torch.equal(out, image)
    for c, value in enumerate((1.0, 2.0, 3.0)):
        assert torch.all(out[:, c][:, pixels] == value)
    assert torch.equal(out[:, :, ~pixels], image[:, :, ~pixels])
    per_sample = torch.stack([pixels, ~pixels])
    out = apply_patch_mask(image, per_sample)
    assert torch.all(out[1][:, ~pixels] == 0) and torch.equal(
        out[1][:, pixels], image[1][:, pixels]
    )


def test_bad_input() -> None:
    with pytest.raises(ValueError, match="pretrain.sr.ratio"):
        random_patch_mask(64, 64, 32, 1.5)
    with pytest.raises(ValueError, match="need h, w, patch >= 1"):
        random_patch_mask(64, 64, 0)
    with pytest.raises(ValueError, match=r"mask must be bool with the image's \(H, W\)"):
        apply_patch_mask(torch.rand(3, 64, 64), torch.ones(32, 32, dtype=torch.bool))
