"""Per-id box InfoNCE against a slow direct loop, analytic cases and its gradient contract."""

import math

import pytest
import torch

from drcl.losses.box_contrast import per_id_info_nce


def _cos(a, b):
    return float(torch.dot(a, b) / (a.norm() * b.norm()))


def ref_per_id(q, q_ids, k, k_ids, t):
    """Direct loop over ids, queries and keys (the formula of the module docstring)."""
    per_id = []
    for i in sorted(set(q_ids.tolist())):
        rows = [r for r in range(len(q)) if q_ids[r] == i]
        negs = [q[r] for r in range(len(q)) if q_ids[r] != i]
        negs += [k[s] for s in range(len(k)) if k_ids[s] != i]
        terms = []
        for r in rows:
            keys = [k[s] for s in range(len(k)) if k_ids[s] == i] or [q[r]]
            neg_sum = sum(math.exp(_cos(q[r], n) / t) for n in negs)
            for key in keys:
                pos = math.exp(_cos(q[r], key) / t)
                terms.append(-math.log(pos / (pos + neg_sum)))
        per_id.append(sum(terms) / len(terms))
    return sum(per_id) / len(per_id)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_matches_slow_reference(seed):
    g = torch.Generator().manual_seed(seed)
    q, k = torch.randn(9, 5, generator=g), torch.randn(7, 5, generator=g)
    # id 3 has queries but no key (falls back to the query itself); id 9 is a key-only id
    q_ids = torch.tensor([0, 0, 1, 1, 1, 2, 3, 3, 4])
    k_ids = torch.tensor([0, 1, 1, 2, 4, 4, 9])
    got = per_id_info_nce(q, q_ids, k, k_ids, temperature=0.5)
    assert got.item() == pytest.approx(ref_per_id(q, q_ids, k, k_ids, 0.5), rel=1e-5)


def test_single_id_without_negatives_is_zero():
    q, k = torch.randn(3, 4), torch.randn(2, 4)
    ids = torch.zeros(3, dtype=torch.long)
    loss = per_id_info_nce(q.requires_grad_(), ids, k, torch.zeros(2, dtype=torch.long))
    assert loss.item() == pytest.approx(0.0, abs=1e-6)
    loss.backward()
    assert torch.isfinite(q.grad).all()


def test_identical_embeddings_analytic():
    """All embeddings equal, n ids with one query and one key each: -log(1 / (1 + 2(n-1)))."""
    n = 4
    q = torch.ones(n, 3)
    ids = torch.arange(n)
    loss = per_id_info_nce(q, ids, q.clone(), ids, temperature=0.5)
    assert loss.item() == pytest.approx(math.log(1 + 2 * (n - 1)), rel=1e-5)


def test_gradient_reaches_queries_only():
    q = torch.randn(4, 3, requires_grad=True)
    k = torch.randn(4, 3, requires_grad=True)
    ids = torch.tensor([0, 1, 2, 3])
    per_id_info_nce(q, ids, k, ids).backward()
    assert q.grad is not None and q.grad.abs().sum() > 0
    assert k.grad is None


def test_empty_queries_give_connected_zero():
    q = torch.zeros(0, 3, requires_grad=True)
    loss = per_id_info_nce(q, torch.zeros(0, dtype=torch.long), torch.randn(2, 3), torch.ones(2))
    assert loss.item() == 0.0 and loss.requires_grad


def test_bad_input_is_named():
    with pytest.raises(ValueError, match="3 queries with 2 ids"):
        per_id_info_nce(torch.randn(3, 2), torch.zeros(2), torch.randn(1, 2), torch.zeros(1))
    with pytest.raises(ValueError, match="temperature"):
        per_id_info_nce(torch.randn(1, 2), torch.zeros(1), torch.randn(1, 2), torch.zeros(1), 0.0)
