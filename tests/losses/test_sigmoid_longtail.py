"""One-stage sigmoid losses against slow per-anchor, per-class references of the papers' formulas.

Layout: logits (M, C) for classes 1..C, labels (M,) in -1..C (0 background, -1 ignored), the sum
divided by the number of positive anchors. References are plain Python floats.
"""

from __future__ import annotations

import math

import pytest
import torch

from drcl.losses.sigmoid_longtail import (
    DENSE_LOSSES,
    EqualizedFocalLoss,
    build_dense_loss,
    ecm_sigmoid_loss,
    equalized_focal_loss,
    focal_loss,
)

C = 4
FREQS = torch.tensor([300.0, 40.0, 3.0, 0.0])  # image counts; a class never seen in training


def _sig(x):
    return 1 / (1 + math.exp(-x))


def _inputs(m=30, seed=0):
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(m, C, generator=g, dtype=torch.float64) * 2
    y = torch.randint(0, C + 1, (m,), generator=g)
    y[torch.rand(m, generator=g) < 0.15] = -1
    return z, y


def _terms(z, y):
    """(i, c, z_ic, t_ic) over valid anchors."""
    for i in range(z.shape[0]):
        if y[i] < 0:
            continue
        for c in range(C):
            yield i, c, z[i, c].item(), 1.0 if y[i].item() == c + 1 else 0.0


def ref_focal(z, y, norm, alpha=0.25, gamma=2.0):
    """Lin et al. 2017, eq. 5: FL(p_t) = -α_t (1 - p_t)^γ log(p_t)."""
    total = 0.0
    for _, _, x, t in _terms(z, y):
        p = _sig(x)
        pt = p if t else 1 - p
        at = alpha if t else 1 - alpha
        total += -at * (1 - pt) ** gamma * math.log(pt)
    return total / max(norm, 1)


def ref_ecm(z, y, norm, freqs, ratio=6.3313):
    """Cho & Krähenbühl 2022, Thm. 2 margins and weights, sigmoid form over C classes."""
    n = [max(v, 1.0) for v in freqs.tolist()]
    total_n = sum(n) * (1 + ratio)  # background count = ratio * sum of class counts
    total = 0.0
    for _, c, x, t in _terms(z, y):
        npos, nneg = n[c], total_n - n[c]
        mp = math.log((npos**0.25 + nneg**0.25) / nneg**0.25)
        mn = math.log((npos**0.25 + nneg**0.25) / npos**0.25)
        a = nneg / npos
        w = a * math.log((1 + a) / a)
        p = math.exp(x + mp) / (math.exp(x + mp) + math.exp(-x + mn))
        total += -w * (t * math.log(p) + (1 - t) * math.log(1 - p))
    return total / max(norm, 1)


def ref_efl(z, y, norm, g_ratio, alpha=0.25, gamma_b=2.0, s=8.0):
    """Li et al. 2022, eq. 6-7: γ_j = γ_b + s(1 - g_j), EFL = -α_t (γ_j/γ_b)(1-p_t)^γ_j log p_t."""
    total = 0.0
    for _, c, x, t in _terms(z, y):
        gj = gamma_b + s * (1 - g_ratio[c])
        p = _sig(x)
        pt = p if t else 1 - p
        at = alpha if t else 1 - alpha
        total += -at * (gj / gamma_b) * (1 - pt) ** gj * math.log(pt)
    return total / max(norm, 1)


@pytest.mark.parametrize("seed", range(3))
def test_focal_matches_reference(seed):
    z, y = _inputs(seed=seed)
    norm = float((y > 0).sum())
    assert focal_loss(z, y, norm).item() == pytest.approx(ref_focal(z, y, norm), rel=1e-9)
    got = focal_loss(z, y, norm, alpha=0.5, gamma=0.0).item()
    assert got == pytest.approx(ref_focal(z, y, norm, 0.5, 0.0), rel=1e-9)


@pytest.mark.parametrize("seed", range(3))
def test_ecm_sigmoid_matches_reference(seed):
    z, y = _inputs(seed=seed)
    norm = float((y > 0).sum())
    got = ecm_sigmoid_loss(z, y, norm, FREQS).item()
    assert got == pytest.approx(ref_ecm(z, y, norm, FREQS), rel=1e-6)


def test_ecm_margins_push_rare_positives_harder():
    # one positive anchor per class with the same logit: the rarer class has the larger loss
    z = torch.zeros(3, C, dtype=torch.float64)
    y = torch.tensor([1, 2, 3])
    per = [ecm_sigmoid_loss(z[i : i + 1], y[i : i + 1], 1.0, FREQS).item() for i in range(3)]
    assert per[0] < per[1] < per[2]


@pytest.mark.parametrize("seed", range(3))
def test_efl_matches_reference(seed):
    z, y = _inputs(seed=seed)
    norm = float((y > 0).sum())
    g = torch.tensor([1.0, 0.6, 0.05, 0.0], dtype=torch.float64)
    got = equalized_focal_loss(z, y, norm, g).item()
    assert got == pytest.approx(ref_efl(z, y, norm, g.tolist()), rel=1e-9)


def test_efl_with_balanced_gradients_is_focal_loss():
    z, y = _inputs()
    ones = torch.ones(C, dtype=torch.float64)
    assert equalized_focal_loss(z, y, 5.0, ones).item() == pytest.approx(
        focal_loss(z, y, 5.0).item(), rel=1e-12
    )


def test_efl_accumulates_gradient_ratio_from_backward():
    z, y = _inputs(seed=1)
    loss_fn = EqualizedFocalLoss(C).double().train()
    assert torch.equal(loss_fn.pos_neg, torch.ones(C, dtype=loss_fn.pos_neg.dtype))
    logits = z.clone().requires_grad_(True)
    loss_fn(logits, y, 4.0).backward()
    grad = logits.grad.abs()
    valid = (y >= 0)[:, None].double()
    target = torch.nn.functional.one_hot(y.clamp(min=0), C + 1)[:, 1:].double()
    pos, neg = (grad * valid * target).sum(0), (grad * valid * (1 - target)).sum(0)
    assert torch.allclose(loss_fn.pos_grad, pos) and torch.allclose(loss_fn.neg_grad, neg)
    assert torch.allclose(loss_fn.pos_neg.double(), (pos / neg).clamp(0, 1))
    before = loss_fn.pos_grad.clone()
    with torch.no_grad():  # evaluation: no hook, no update
        loss_fn.eval()(z, y, 4.0)
    assert torch.equal(loss_fn.pos_grad, before)
    assert set(loss_fn.state_dict()) == {"pos_grad", "neg_grad", "pos_neg"}


def test_ignored_anchors_do_not_count():
    z, y = _inputs()
    keep = y >= 0
    for name in DENSE_LOSSES:
        fn = build_dense_loss(name, C, FREQS)
        a, b = fn(z, y, 3.0), fn(z[keep], y[keep], 3.0)
        assert a.item() == pytest.approx(b.item(), rel=1e-12), name


@pytest.mark.parametrize("name", sorted(DENSE_LOSSES))
def test_empty_and_background_only(name):
    fn = build_dense_loss(name, C, FREQS)
    z = torch.zeros(0, C, requires_grad=True)
    loss = fn(z, torch.zeros(0, dtype=torch.long), 0.0)
    assert loss.item() == 0.0 and loss.requires_grad
    z = torch.zeros(5, C, requires_grad=True)
    loss = fn(z, torch.zeros(5, dtype=torch.long), 0.0)  # no positive: normalised by 1
    loss.backward()
    assert loss.item() > 0 and (z.grad > 0).all()  # every class pushed down


def test_bad_inputs_and_names():
    fn = build_dense_loss("focal", C)
    with pytest.raises(ValueError, match=r"labels must be in -1\.\.4"):
        fn(torch.zeros(2, C), torch.tensor([0, 5]), 1.0)
    with pytest.raises(ValueError, match=r"expected logits \(M, C\)"):
        fn(torch.zeros(2, C, 1), torch.tensor([0, 1]), 1.0)
    with pytest.raises(ValueError, match="allowed: focal, ecm, efl"):
        build_dense_loss("ce", C)
    with pytest.raises(ValueError, match="needs class_freqs"):
        build_dense_loss("ecm", C)


def test_half_precision_logits_are_computed_in_float32():
    z, y = _inputs()
    for name in DENSE_LOSSES:
        fn = build_dense_loss(name, C, FREQS).eval()
        ref = fn(z.float(), y, 2.0)
        got = fn(z.to(torch.bfloat16).float().to(torch.bfloat16), y, 2.0)
        assert got.dtype == torch.float32 and torch.isfinite(got), name
        assert got.item() == pytest.approx(ref.item(), rel=0.05), name
