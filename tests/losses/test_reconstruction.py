"""AR (pixel L1) and SR (masked 1 - cos) against hand values and direct loops."""

import pytest
import torch
import torch.nn.functional as F

from drcl.losses.reconstruction import pixel_l1_loss, resize_mask, semantic_reconstruction_loss


def test_pixel_l1_known_values():
    pred, target = torch.zeros(1, 3, 2, 2), torch.full((1, 3, 2, 2), 2.0)
    target[0, :, 0, 0] = -1.0  # |0 - (-1)| = 1 at one pixel, 2 elsewhere
    assert pixel_l1_loss(pred, target).item() == pytest.approx((1 + 2 * 3) / 4)
    mask = torch.tensor([[[True, False], [False, False]]])
    assert pixel_l1_loss(pred, target, mask).item() == pytest.approx(1.0)


def test_pixel_l1_coarse_mask_matches_loop():
    g = torch.Generator().manual_seed(0)
    pred, target = torch.randn(2, 3, 8, 8, generator=g), torch.randn(2, 3, 8, 8, generator=g)
    grid = torch.tensor([[[1, 0], [0, 1]], [[0, 0], [1, 0]]], dtype=torch.bool)  # 4 px patches
    total, count = 0.0, 0
    for b in range(2):
        for y in range(8):
            for x in range(8):
                if grid[b, y // 4, x // 4]:
                    total += (pred[b, :, y, x] - target[b, :, y, x]).abs().sum().item()
                    count += 3
    assert pixel_l1_loss(pred, target, grid).item() == pytest.approx(total / count, rel=1e-5)


def test_pixel_l1_empty_mask_is_zero_with_graph():
    pred = torch.randn(1, 3, 4, 4, requires_grad=True)
    loss = pixel_l1_loss(pred, torch.randn(1, 3, 4, 4), torch.zeros(1, 4, 4, dtype=torch.bool))
    loss.backward()
    assert loss.item() == 0.0 and (pred.grad == 0).all()


def ref_sr(pred, target, pixel_mask):
    """Per level: mean over masked cells (cell centre-free: nearest = top-left pixel) of 1 - cos."""
    levels = []
    for p, t in zip(pred, target, strict=True):
        b, _, h, w = p.shape
        stride = pixel_mask.shape[-1] // w
        vals = [
            1 - F.cosine_similarity(p[i, :, y, x], t[i, :, y, x], dim=0).item()
            for i in range(b)
            for y in range(h)
            for x in range(w)
            if pixel_mask[i, y * stride, x * stride]
        ]
        levels.append(sum(vals) / len(vals) if vals else 0.0)
    return sum(levels) / len(levels)


def test_sr_matches_loop_over_levels():
    g = torch.Generator().manual_seed(1)
    shapes = [(2, 5, 16, 16), (2, 5, 8, 8), (2, 5, 4, 4), (2, 5, 2, 2)]  # strides 4..32 at 64 px
    pred = [torch.randn(s, generator=g) for s in shapes]
    target = [torch.randn(s, generator=g) for s in shapes]
    grid = torch.tensor([[[1, 0], [0, 0]], [[0, 1], [1, 1]]], dtype=torch.bool)  # 32 px patches
    pixels = grid.repeat_interleave(32, 1).repeat_interleave(32, 2)
    got = semantic_reconstruction_loss(pred, target, pixels).item()
    assert got == pytest.approx(ref_sr(pred, target, pixels), rel=1e-5)
    # The coarse grid gives the same cells as the pixel mask (strides divide the patch).
    assert semantic_reconstruction_loss(pred, target, grid).item() == pytest.approx(got, rel=1e-6)


def test_sr_analytic_and_no_masked_patch():
    x = [torch.randn(1, 4, 4, 4), torch.randn(1, 4, 2, 2)]
    full = torch.ones(1, 2, 2, dtype=torch.bool)
    assert semantic_reconstruction_loss(x, [2 * t for t in x], full).item() == pytest.approx(
        0.0, abs=1e-6
    )
    assert semantic_reconstruction_loss(x, [-t for t in x], full).item() == pytest.approx(2.0)
    pred = [t.clone().requires_grad_(True) for t in x]
    loss = semantic_reconstruction_loss(pred, x, torch.zeros(1, 2, 2, dtype=torch.bool))
    loss.backward()
    assert loss.item() == 0.0 and all(p.grad is not None and (p.grad == 0).all() for p in pred)


def test_bad_inputs():
    with pytest.raises(ValueError, match="pred and target"):
        pixel_l1_loss(torch.zeros(1, 3, 2, 2), torch.zeros(1, 3, 2, 3))
    with pytest.raises(ValueError, match="levels"):
        semantic_reconstruction_loss([], [], torch.zeros(1, 1, 1, dtype=torch.bool))
    with pytest.raises(ValueError, match="level shapes"):
        semantic_reconstruction_loss(
            [torch.zeros(1, 2, 2, 2)], [torch.zeros(1, 2, 4, 4)], torch.ones(1, 1, 1).bool()
        )
    with pytest.raises(ValueError, match="mask must be"):
        resize_mask(torch.ones(2, 2).bool(), (4, 4))
