"""Long-tail losses against slow, direct implementations of each paper's formula.

Layout everywhere: logits (N, C + 1) with background at channel 0, labels in 0..C (0 = bg).
References are written per sample and per class in float64, from the papers / official code.
"""

from __future__ import annotations

import math

import pytest
import torch

from drcl.losses.longtail import (
    LOSSES,
    ECMLoss,
    FederatedLoss,
    SeesawLoss,
    build_classification_loss,
    ecm_loss,
    federated_classes,
    federated_loss,
    seesaw_loss,
    sigmoid_bce_loss,
    softmax_ce_loss,
)

C = 5


def _sigmoid(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x))


def _inputs(n: int = 12, c: int = C, seed: int = 0, bg_frac: float = 0.4):
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(n, c + 1, generator=g, dtype=torch.float64) * 2
    labels = torch.randint(1, c + 1, (n,), generator=g)
    labels[torch.rand(n, generator=g) < bg_frac] = 0
    return logits, labels


# ---- references ---------------------------------------------------------------------------------


def ref_ce(z, y):
    total = 0.0
    for i in range(len(y)):
        denom = sum(math.exp(v) for v in z[i].tolist())
        total += -math.log(math.exp(z[i, y[i]].item()) / denom)
    return total / len(y)


def ref_bce(z, y, classes=None):
    """Zhou et al. 2021 / detectron2: sum over (sample, class in S) of BCE, divided by N."""
    n, c = z.shape[0], z.shape[1] - 1
    classes = range(1, c + 1) if classes is None else classes
    total = 0.0
    for i in range(n):
        for k in classes:
            p = _sigmoid(z[i, k].item())
            t = 1.0 if y[i].item() == k else 0.0
            total += -(t * math.log(p) + (1 - t) * math.log(1 - p))
    return total / n


def ref_seesaw(z, y, counts, p=0.8, q=2.0, eps=1e-2):
    """Wang et al. 2021 Eq. 2-5 with mmdetection's objectness branch, over N samples."""
    n, c = z.shape[0], z.shape[1] - 1
    total = 0.0
    for i in range(n):
        b = 1.0 if y[i].item() == 0 else 0.0
        s0 = _sigmoid(z[i, 0].item())
        total += -(b * math.log(s0) + (1 - b) * math.log(1 - s0))
        if b:
            continue
        k = y[i].item() - 1  # class index in 0..C-1
        zc = [z[i, j + 1].item() for j in range(c)]
        soft = [math.exp(v) / sum(math.exp(u) for u in zc) for v in zc]
        denom = math.exp(zc[k])
        for j in range(c):
            if j == k:
                continue
            nk, nj = max(counts[k], 1.0), max(counts[j], 1.0)
            m = (nj / nk) ** p if nk > nj else 1.0
            ratio = soft[j] / max(soft[k], eps)
            comp = ratio**q if ratio > 1 else 1.0
            denom += m * comp * math.exp(zc[j])
        total += -math.log(math.exp(zc[k]) / denom)
    return total / n


def ref_ecm_official_layout(z_off, y_off, image_counts, fg_bg_ratio=6.3313):
    """janghyuncho/ECM-Loss ``EffectiveClassMarginLoss`` with background LAST (mmdet layout)."""
    n_cls = [max(float(v), 1.0) for v in image_counts]
    n = n_cls + [sum(n_cls) * fg_bg_ratio]
    total_n = sum(n)
    total = 0.0
    for i in range(z_off.shape[0]):
        for c in range(len(n)):
            npos, nneg = n[c], total_n - n[c]
            m_pos = math.log(1.0 / (nneg**0.25 / (npos**0.25 + nneg**0.25)))
            m_neg = math.log(1.0 / (npos**0.25 / (npos**0.25 + nneg**0.25)))
            zz = z_off[i, c].item()
            e_pos, e_neg = math.exp(zz + m_pos), math.exp(-zz + m_neg)
            t = 1.0 if y_off[i].item() == c else 0.0
            loss = -(
                t * math.log(e_pos / (e_pos + e_neg)) + (1 - t) * math.log(e_neg / (e_pos + e_neg))
            )
            a = nneg / npos
            total += loss * a * math.log((1 + a) / a)
    return total / z_off.shape[0]


# ---- softmax CE and BCE -------------------------------------------------------------------------


def test_softmax_ce_matches_reference():
    z, y = _inputs()
    assert softmax_ce_loss(z, y).item() == pytest.approx(ref_ce(z, y), rel=1e-10)


def test_softmax_ce_background_is_channel_0():
    # A confident background logit makes a background sample cheap and a foreground one costly.
    z = torch.zeros(2, C + 1, dtype=torch.float64)
    z[:, 0] = 10.0
    assert softmax_ce_loss(z[:1], torch.tensor([0])) < 1e-3
    assert softmax_ce_loss(z[1:], torch.tensor([3])) > 9.0


def test_sigmoid_bce_matches_reference_and_ignores_channel_0():
    z, y = _inputs(seed=1)
    z.requires_grad_(True)
    loss = sigmoid_bce_loss(z, y)
    assert loss.item() == pytest.approx(ref_bce(z.detach(), y), rel=1e-10)
    loss.backward()
    assert torch.all(z.grad[:, 0] == 0)


def test_sigmoid_bce_background_only_batch_pushes_all_classes_down():
    z = torch.zeros(3, C + 1, dtype=torch.float64, requires_grad=True)
    y = torch.zeros(3, dtype=torch.int64)
    loss = sigmoid_bce_loss(z, y)
    assert loss.item() == pytest.approx(C * math.log(2), rel=1e-12)  # every class a negative
    loss.backward()
    assert torch.all(z.grad[:, 1:] > 0)


# ---- federated ----------------------------------------------------------------------------------


def test_federated_classes_keep_batch_classes_and_skip_unseen():
    freqs = torch.tensor([5.0, 0.0, 3.0, 9.0, 1.0])
    labels = torch.tensor([0, 2, 2, 0, 5])
    g = torch.Generator().manual_seed(0)
    for _ in range(20):
        s = federated_classes(labels, freqs, num_sampled=4, generator=g)
        assert {2, 5} <= set(s.tolist())
        assert len(s) == 4 and 0 not in s.tolist()
        assert len(set(s.tolist())) == 4
    # All 4 classes with training images: the class with 0 images is never drawn.
    s = federated_classes(labels, freqs, num_sampled=10, generator=g)
    assert sorted(s.tolist()) == [1, 2, 3, 4, 5]  # 2 is in the batch although it has freq 0
    s = federated_classes(torch.tensor([0, 0]), freqs, num_sampled=10, generator=g)
    assert sorted(s.tolist()) == [1, 3, 4, 5]


def test_federated_classes_when_batch_already_has_enough():
    labels = torch.tensor([1, 3, 4, 0])
    s = federated_classes(labels, torch.ones(5), num_sampled=2)
    assert s.tolist() == [1, 3, 4]


def test_federated_sampling_is_proportional_to_sqrt_frequency():
    freqs = torch.tensor([1.0, 4.0, 16.0, 0.0])  # sqrt: 1, 2, 4, 0 -> P = 1/7, 2/7, 4/7, 0
    g = torch.Generator().manual_seed(0)
    draws = 7000
    hits = torch.zeros(4)
    for _ in range(draws):
        s = federated_classes(torch.tensor([0]), freqs, num_sampled=1, generator=g)
        hits[s - 1] += 1
    expected = torch.tensor([1 / 7, 2 / 7, 4 / 7, 0.0])
    assert torch.allclose(hits / draws, expected, atol=0.02)
    assert hits[3] == 0


def test_federated_loss_is_bce_on_the_sampled_subset():
    z, y = _inputs(n=10, c=8, seed=2)
    freqs = torch.arange(1.0, 9.0)
    classes = federated_classes(y, freqs, 4, generator=torch.Generator().manual_seed(3))
    loss = federated_loss(z, y, freqs, 4, generator=torch.Generator().manual_seed(3))
    assert loss.item() == pytest.approx(ref_bce(z, y, classes.tolist()), rel=1e-10)


def test_federated_absent_unsampled_classes_get_no_gradient():
    z = torch.randn(4, 7, dtype=torch.float64, requires_grad=True)
    y = torch.tensor([0, 1, 1, 0])
    freqs = torch.tensor([10.0, 0.0, 0.0, 0.0, 0.0, 0.0])  # only class 1 can ever be used
    federated_loss(z, y, freqs, num_sampled=3).backward()
    assert torch.all(z.grad[:, 1] != 0)
    assert torch.all(z.grad[:, 2:] == 0) and torch.all(z.grad[:, 0] == 0)


# ---- seesaw -------------------------------------------------------------------------------------


def test_seesaw_matches_reference():
    z, y = _inputs(n=16, seed=4)
    counts = torch.tensor([500.0, 3.0, 40.0, 0.0, 1200.0], dtype=torch.float64)
    got = seesaw_loss(z, y, counts, p=0.8, q=2.0)
    assert got.item() == pytest.approx(ref_seesaw(z, y, counts.tolist()), rel=1e-9)


def test_seesaw_with_equal_counts_and_no_compensation_is_objectness_plus_ce():
    z, y = _inputs(n=10, seed=5)
    fg = y > 0
    # q = 0: no compensation; equal counts: no mitigation -> plain CE on classes for fg samples.
    got = seesaw_loss(z, y, torch.ones(C, dtype=torch.float64), p=0.8, q=0.0)
    obj = torch.nn.functional.binary_cross_entropy_with_logits(
        z[:, 0], (y == 0).double(), reduction="sum"
    )
    ce = torch.nn.functional.cross_entropy(z[fg, 1:], y[fg] - 1, reduction="sum")
    assert got.item() == pytest.approx(((obj + ce) / len(y)).item(), rel=1e-12)


def test_seesaw_mitigation_hand_computed():
    # Two classes, counts 100 (frequent) vs 1 (rare), q = 0: a frequent-class sample penalises
    # the rare class by (1/100)^0.8, a rare-class sample penalises the frequent class fully.
    z = torch.tensor([[-50.0, 0.0, 0.0], [-50.0, 0.0, 0.0]], dtype=torch.float64)
    counts = torch.tensor([100.0, 1.0], dtype=torch.float64)
    frequent = seesaw_loss(z[:1], torch.tensor([1]), counts, p=0.8, q=0.0)
    rare = seesaw_loss(z[1:], torch.tensor([2]), counts, p=0.8, q=0.0)
    obj = math.log1p(math.exp(-50.0))  # -log(1 - sigmoid(-50))
    assert frequent.item() == pytest.approx(obj + math.log(1 + 0.01**0.8), rel=1e-9)
    assert rare.item() == pytest.approx(obj + math.log(2.0), rel=1e-9)


def test_seesaw_module_accumulates_counts_in_training_only():
    loss = SeesawLoss(C)
    z, y = _inputs(n=20, seed=6)
    loss.train()
    loss(z, y)
    loss(z, y)
    expected = 2 * torch.bincount(y, minlength=C + 1)[1:].double()
    assert torch.equal(loss.cum_counts, expected)
    # The loss used the counts including the current batch (mmdetection order).
    z2, y2 = _inputs(n=8, seed=7)
    got = loss(z2, y2)
    counts = expected + torch.bincount(y2, minlength=C + 1)[1:].double()
    assert got.item() == pytest.approx(ref_seesaw(z2, y2, counts.tolist()), rel=1e-9)
    loss.eval()
    before = loss.cum_counts.clone()
    loss(z, y)
    assert torch.equal(loss.cum_counts, before)
    assert "cum_counts" in loss.state_dict()


def test_seesaw_background_only_batch_trains_objectness_only():
    z = torch.randn(4, C + 1, dtype=torch.float64, requires_grad=True)
    y = torch.zeros(4, dtype=torch.int64)
    module = SeesawLoss(C).train()
    module(z, y).backward()
    assert torch.all(module.cum_counts == 0)
    assert torch.all(z.grad[:, 1:] == 0) and torch.all(z.grad[:, 0] != 0)


# ---- ECM ----------------------------------------------------------------------------------------


def test_ecm_matches_official_formula_in_its_own_channel_layout():
    z, y = _inputs(n=9, seed=8)
    counts = [1.0, 7.0, 60.0, 300.0, 2.0]
    # Official code: classes first, background last; labels C = background.
    z_off = torch.cat([z[:, 1:], z[:, :1]], dim=1)
    y_off = torch.where(y == 0, torch.full_like(y, C), y - 1)
    got = ecm_loss(z, y, torch.tensor(counts))
    assert got.item() == pytest.approx(ref_ecm_official_layout(z_off, y_off, counts), rel=1e-5)


def test_ecm_class_absent_from_training_is_finite_and_background_only_batch():
    z = torch.randn(5, C + 1, dtype=torch.float64, requires_grad=True)
    counts = torch.tensor([0.0, 0.0, 5.0, 50.0, 500.0])
    loss = ecm_loss(z, torch.zeros(5, dtype=torch.int64), counts)
    assert torch.isfinite(loss)
    loss.backward()
    assert torch.all(torch.isfinite(z.grad))
    # Background is a class (channel 0): a background sample pulls z_0 up.
    assert torch.all(z.grad[:, 0] < 0) and torch.all(z.grad[:, 1:] > 0)


def test_ecm_margins_favour_rare_classes():
    # For a rare class the positive margin is larger than for a frequent one (Thm. 2).
    from drcl.losses.longtail import ecm_margins

    m_pos, m_neg, _ = ecm_margins(torch.tensor([1.0, 1000.0]))
    assert m_pos[1] - m_neg[1] < m_pos[2] - m_neg[2]


# ---- modules, scores, factory, degenerate inputs -------------------------------------------------


def _build(name: str):
    return build_classification_loss(name, C, torch.tensor([1.0, 5, 20, 100, 0]))


def test_every_loss_name_builds_and_runs():
    assert set(LOSSES) == {"ce", "bce", "federated", "seesaw", "ecm"}
    z, y = _inputs()
    for name in LOSSES:
        loss = _build(name).train()
        assert loss.name == name and loss.num_classes == C
        value = loss(z, y)
        assert value.dim() == 0 and torch.isfinite(value)
        scores = loss.scores(z)
        assert scores.shape == (len(y), C)
        assert torch.all((scores >= 0) & (scores <= 1))


def test_scores_per_loss():
    z, _ = _inputs(n=6, seed=9)
    soft = torch.softmax(z, 1)
    assert torch.allclose(_build("ce").scores(z), soft[:, 1:])
    assert torch.allclose(_build("bce").scores(z), torch.sigmoid(z[:, 1:]))
    assert torch.allclose(_build("federated").scores(z), torch.sigmoid(z[:, 1:]))
    seesaw = _build("seesaw").scores(z)
    assert torch.allclose(seesaw.sum(1), 1 - torch.sigmoid(z[:, 0]))  # = P(foreground)
    ecm = _build("ecm").scores(z)
    assert torch.allclose(ecm, torch.sigmoid(z[:, 1:]) * (1 - torch.sigmoid(z[:, :1])))


@pytest.mark.parametrize("name", sorted(LOSSES))
def test_empty_batch_gives_zero_loss_with_graph(name):
    z = torch.zeros(0, C + 1, requires_grad=True)
    loss = _build(name).train()(z, torch.zeros(0, dtype=torch.int64))
    assert loss.item() == 0.0
    loss.backward()  # still connected to the graph


def test_bad_inputs_are_named():
    with pytest.raises(ValueError, match="allowed: ce, bce, federated, seesaw, ecm"):
        build_classification_loss("focal", C)
    with pytest.raises(ValueError, match="needs class_freqs"):
        build_classification_loss("ecm", C)
    with pytest.raises(ValueError, match="has 3 entries, need 5"):
        FederatedLoss(C, torch.ones(3))
    with pytest.raises(ValueError, match=r"labels must be in 0\.\.5"):
        softmax_ce_loss(torch.zeros(2, C + 1), torch.tensor([0, 6]))
    with pytest.raises(ValueError, match=r"expected logits \(N, C \+ 1\)"):
        ECMLoss(C, torch.ones(C))(torch.zeros(2, C + 1), torch.zeros(3, dtype=torch.int64))


def test_frequencies_are_not_saved_in_checkpoints():
    # Data-derived buffers stay out of state_dict: a model built for evaluation needs no counts.
    assert "class_freqs" not in _build("ecm").state_dict()
    assert "class_freqs" not in _build("federated").state_dict()


@pytest.mark.parametrize("name", sorted(LOSSES))
def test_half_precision_logits_are_computed_in_float32(name):
    # Under AMP the predictor emits bf16; the loss must equal the float32 loss of those values.
    z, y = _inputs(seed=10)
    z16 = z.to(torch.bfloat16)
    torch.manual_seed(0)
    low = _build(name).train()(z16, y)
    torch.manual_seed(0)
    full = _build(name).train()(z16.float(), y)
    assert low.dtype == torch.float32
    assert low.item() == pytest.approx(full.item(), rel=1e-6)
