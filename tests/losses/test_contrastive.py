"""Contrastive losses against slow loop references, analytic values and a 2-rank gather."""

import math

import pytest
import torch
import torch.nn.functional as F

from drcl.losses.contrastive import byol_loss, info_nce, multi_positive_info_nce


def _cos(a, b):
    return float(torch.dot(a, b) / (a.norm() * b.norm()))


def ref_info_nce(q, k, t, valid, extra=None):
    """Direct loop: -log(exp(s_ii/t) / sum_{j valid} exp(s_ij/t)), mean over valid i."""
    keys = [k[j] for j in range(len(k)) if valid[j]] + ([] if extra is None else list(extra))
    total, n = 0.0, 0
    for i in range(len(q)):
        if not valid[i]:
            continue
        denom = sum(math.exp(_cos(q[i], kj) / t) for kj in keys)
        total += -math.log(math.exp(_cos(q[i], k[i]) / t) / denom)
        n += 1
    return total / max(n, 1)


def ref_multi_positive(q, k, labels, t, valid):
    """Direct loop of SupCon L_out with positives = same box or same known label."""
    return _ref_multi_positive_rows(q, k, labels, t, valid, range(len(q)))


def test_byol_analytic_values():
    x = torch.randn(5, 8)
    assert byol_loss(x, 3 * x).item() == pytest.approx(0.0, abs=1e-6)
    assert byol_loss(x, -x).item() == pytest.approx(4.0, abs=1e-6)
    e = torch.eye(2)
    assert byol_loss(e, e.flip(0)).item() == pytest.approx(2.0)  # orthogonal: 2 - 2 * 0


def test_byol_matches_loop_and_empty_keeps_graph():
    g = torch.Generator().manual_seed(0)
    p, z = torch.randn(6, 4, generator=g), torch.randn(6, 4, generator=g)
    ref = sum(2 - 2 * _cos(p[i], z[i]) for i in range(6)) / 6
    assert byol_loss(p, z).item() == pytest.approx(ref, rel=1e-5)
    empty = torch.zeros(0, 4, requires_grad=True)
    loss = byol_loss(empty, torch.zeros(0, 4))
    loss.backward()
    assert loss.item() == 0.0 and empty.grad is not None


@pytest.mark.parametrize("t", [0.5, 0.1])
def test_info_nce_identical_orthogonal_embeddings(t):
    # s_ii = 1, s_ij = 0: L = -log(e^{1/t} / (e^{1/t} + (N-1) e^0)) = log(1 + (N-1) e^{-1/t})
    n = 5
    q = torch.eye(8)[:n] * 2.0
    expected = math.log(1 + (n - 1) * math.exp(-1 / t))
    assert info_nce(q, q.clone(), t).item() == pytest.approx(expected, rel=1e-4, abs=1e-6)


def test_info_nce_matches_loop_with_mask_and_extra_negatives():
    g = torch.Generator().manual_seed(1)
    q, k = torch.randn(7, 5, generator=g), torch.randn(7, 5, generator=g)
    valid = torch.tensor([1, 0, 1, 1, 0, 1, 1], dtype=torch.bool)
    extra = torch.randn(3, 5, generator=g)
    assert info_nce(q, k, 0.5, valid).item() == pytest.approx(
        ref_info_nce(q, k, 0.5, valid), rel=1e-5
    )
    got = info_nce(q, k, 0.3, valid, extra_negatives=extra).item()
    assert got == pytest.approx(ref_info_nce(q, k, 0.3, valid, extra), rel=1e-5)


def test_info_nce_no_valid_rows_is_zero_with_graph():
    q = torch.randn(4, 3, requires_grad=True)
    loss = info_nce(q, torch.randn(4, 3), 0.5, torch.zeros(4, dtype=torch.bool))
    loss.backward()
    assert loss.item() == 0.0 and torch.isfinite(q.grad).all() and (q.grad == 0).all()


def test_info_nce_gradient_matches_autograd_of_direct_formula():
    g = torch.Generator().manual_seed(2)
    q = torch.randn(4, 3, generator=g, requires_grad=True)
    k = torch.randn(4, 3, generator=g)
    info_nce(q, k, 0.5).backward()
    q2 = q.detach().clone().requires_grad_(True)
    logits = F.normalize(q2, dim=1) @ F.normalize(k, dim=1).T / 0.5
    F.cross_entropy(logits, torch.arange(4)).backward()
    torch.testing.assert_close(q.grad, q2.grad)


def test_multi_positive_matches_loop():
    g = torch.Generator().manual_seed(3)
    q, k = torch.randn(8, 4, generator=g), torch.randn(8, 4, generator=g)
    labels = torch.tensor([0, 1, 1, 2, 0, 1, 2, 3])
    valid = torch.tensor([1, 1, 1, 1, 1, 0, 1, 1], dtype=torch.bool)
    got = multi_positive_info_nce(q, k, labels, labels, 0.5, valid).item()
    assert got == pytest.approx(ref_multi_positive(q, k, labels, 0.5, valid), rel=1e-5)


def test_multi_positive_without_known_labels_equals_info_nce():
    g = torch.Generator().manual_seed(4)
    q, k = torch.randn(6, 4, generator=g), torch.randn(6, 4, generator=g)
    zeros = torch.zeros(6, dtype=torch.long)
    a = multi_positive_info_nce(q, k, zeros, zeros, 0.5)
    torch.testing.assert_close(a, info_nce(q, k, 0.5))
    distinct = torch.arange(1, 7)  # every box its own class: again only the box itself
    torch.testing.assert_close(multi_positive_info_nce(q, k, distinct, distinct, 0.5), a)


def test_bad_inputs_are_named():
    q = torch.randn(3, 4)
    with pytest.raises(ValueError, match="q and k"):
        info_nce(q, torch.randn(2, 4), 0.5)
    with pytest.raises(ValueError, match="temperature"):
        info_nce(q, q, 0.0)
    with pytest.raises(ValueError, match="valid"):
        info_nce(q, q, 0.5, torch.ones(2, dtype=torch.bool))
    with pytest.raises(ValueError, match="labels"):
        multi_positive_info_nce(q, q, torch.zeros(2), torch.zeros(3), 0.5)


def _rank_worker(rank, world, init_file, out_dir):
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    g = torch.Generator().manual_seed(10)
    q_all, k_all = torch.randn(8, 4, generator=g), torch.randn(8, 4, generator=g)
    labels_all = torch.tensor([0, 1, 2, 1, 0, 2, 1, 3])
    valid_all = torch.tensor([1, 1, 0, 1, 1, 1, 1, 0], dtype=torch.bool)
    rows = slice(0, 3) if rank == 0 else slice(3, 8)  # unequal sizes across ranks
    q, k = q_all[rows].clone(), k_all[rows].clone().requires_grad_(True)
    loss = info_nce(q, k, 0.5, valid_all[rows], gather_distributed=True)
    loss.backward()
    sup = multi_positive_info_nce(
        q, k.detach(), labels_all[rows], labels_all[rows], 0.5, valid_all[rows], True
    )
    torch.save({"loss": loss.detach(), "grad": k.grad, "sup": sup}, f"{out_dir}/r{rank}.pt")
    dist.destroy_process_group()


def test_gather_distributed_uses_all_ranks_keys(tmp_path):
    import torch.multiprocessing as mp

    mp.spawn(_rank_worker, args=(2, str(tmp_path / "init"), str(tmp_path)), nprocs=2)
    g = torch.Generator().manual_seed(10)
    q_all, k_all = torch.randn(8, 4, generator=g), torch.randn(8, 4, generator=g)
    labels_all = torch.tensor([0, 1, 2, 1, 0, 2, 1, 3])
    valid_all = torch.tensor([1, 1, 0, 1, 1, 1, 1, 0], dtype=torch.bool)
    for rank, rows in ((0, range(0, 3)), (1, range(3, 8))):
        res = torch.load(tmp_path / f"r{rank}.pt")
        # Reference: this rank's valid queries against every rank's valid keys.
        keys = [k_all[j] for j in range(8) if valid_all[j]]
        terms = [
            -math.log(
                math.exp(_cos(q_all[i], k_all[i]) / 0.5)
                / sum(math.exp(_cos(q_all[i], kj) / 0.5) for kj in keys)
            )
            for i in rows
            if valid_all[i]
        ]
        assert res["loss"].item() == pytest.approx(sum(terms) / len(terms), rel=1e-5)
        # Gradient reaches the local keys only, as if other ranks' keys were constants.
        idx = list(rows)
        k_local = k_all[idx].clone().requires_grad_(True)
        k_full = torch.cat([k_all[: rows.start], k_local, k_all[rows.stop :]])
        logits = F.normalize(q_all[idx], dim=1) @ F.normalize(k_full, dim=1).T / 0.5
        per = F.cross_entropy(
            logits.masked_fill(~valid_all[None], -1e9), torch.tensor(idx), reduction="none"
        )
        per[valid_all[idx]].mean().backward()
        torch.testing.assert_close(res["grad"], k_local.grad)
        # Supervised: same-class keys of the other rank count as positives.
        ref_sup = _ref_multi_positive_rows(q_all, k_all, labels_all, 0.5, valid_all, rows)
        assert res["sup"].item() == pytest.approx(ref_sup, rel=1e-5)


def _ref_multi_positive_rows(q, k, labels, t, valid, rows):
    total, n = 0.0, 0
    js = [j for j in range(len(k)) if valid[j]]
    for i in rows:
        if not valid[i]:
            continue
        denom = sum(math.exp(_cos(q[i], k[j]) / t) for j in js)
        pos = [j for j in js if j == i or (labels[i] > 0 and labels[j] == labels[i])]
        total += -sum(math.log(math.exp(_cos(q[i], k[j]) / t) / denom) for j in pos) / len(pos)
        n += 1
    return total / n
