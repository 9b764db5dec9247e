"""Contrastive losses of 2DRCL: BYOL cosine (HCL), InfoNCE and multi-positive InfoNCE (LCL).

Conventions shared by all functions:

- ``q: (N, D)`` queries (online predictions), ``k: (N, D)`` keys (target projections); row ``i``
  of ``q`` and row ``i`` of ``k`` are the same image / box seen in the two views (the positive).
- Embeddings are L2-normalised inside the loss; similarities are cosines. Losses are computed in
  float32 whatever the input dtype (AMP-safe).
- ``valid: (N,)`` bool marks real rows; padding rows (boxes that did not survive the crop) are
  neither queries nor keys.
- ``gather_distributed=True`` gathers the keys (and their masks/labels) of every rank, so the
  negatives are "all other boxes of the global batch". The local chunk keeps its gradient; other
  ranks' chunks are constants (each rank back-propagates its own part). Ranks may hold different
  ``N``.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor

# Fill value for excluded keys: exp(-1e9 - max) == 0 in float32, yet finite, so a row with no
# valid key at all gives a finite loss instead of NaN (it is then masked out).
_EXCLUDED = -1e9


def byol_loss(p: Tensor, z: Tensor) -> Tensor:
    """BYOL regression loss ``mean_i (2 - 2 cos(p_i, z_i))``; 0 when aligned, 4 when opposite.

    Args:
        p: ``(N, D)`` online predictions.
        z: ``(N, D)`` target projections (the caller passes them without gradient).

    Returns:
        scalar; the mean over rows (``N = 0`` gives 0 with the graph kept).
    """
    cos = (F.normalize(p.float(), dim=1) * F.normalize(z.float(), dim=1)).sum(dim=1)
    if cos.numel() == 0:
        return cos.sum()
    return (2.0 - 2.0 * cos).mean()


def _distributed() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def gather_with_local_grad(x: Tensor) -> tuple[Tensor, int]:
    """Concatenate ``x`` of all ranks along dim 0; the local chunk keeps its autograd graph.

    Args:
        x: ``(n_rank, ...)``; ``n_rank`` may differ between ranks (padded for the collective).

    Returns:
        ``(x_all, offset)``: ``x_all: (sum_r n_r, ...)`` in rank order and the row where this
        rank's chunk starts. Without an initialised process group: ``(x, 0)``.
    """
    if not _distributed():
        return x, 0
    world, rank = dist.get_world_size(), dist.get_rank()
    size = torch.tensor([x.shape[0]], device=x.device, dtype=torch.int64)
    sizes_t = [torch.zeros_like(size) for _ in range(world)]
    dist.all_gather(sizes_t, size)
    sizes = [int(s.item()) for s in sizes_t]
    padded = x.detach().new_zeros((max(sizes), *x.shape[1:]))
    padded[: x.shape[0]] = x.detach()
    chunks = [torch.empty_like(padded) for _ in range(world)]
    dist.all_gather(chunks, padded)
    parts = [x if r == rank else chunks[r][: sizes[r]] for r in range(world)]
    return torch.cat(parts, dim=0), sum(sizes[:rank])


def _keys_and_masks(
    k: Tensor, valid: Tensor, labels: Tensor | None, gather: bool
) -> tuple[Tensor, Tensor, Tensor | None, int]:
    """Gather keys, validity (as int64: gloo has no bool collectives) and labels if asked."""
    if not gather:
        return k, valid, labels, 0
    k_all, offset = gather_with_local_grad(k)
    valid_all = gather_with_local_grad(valid.to(torch.int64))[0].bool()
    labels_all = None if labels is None else gather_with_local_grad(labels.to(torch.int64))[0]
    return k_all, valid_all, labels_all, offset


def _masked_logits(q: Tensor, k_all: Tensor, valid_all: Tensor, temperature: float) -> Tensor:
    """``(N, M)`` cosine / temperature, excluded keys set to ``_EXCLUDED``."""
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    # fp32 even under autocast: fp16 cannot hold _EXCLUDED (max 65504), and a cosine / 0.2 in
    # bf16 (8 mantissa bits) would blur the logits the softmax compares
    with torch.autocast(q.device.type, enabled=False):
        qn = F.normalize(q.float(), dim=1)
        kn = F.normalize(k_all.float(), dim=1)
        return (qn @ kn.T / temperature).masked_fill(~valid_all[None, :], _EXCLUDED)


def _mean_over(per_row: Tensor, keep: Tensor) -> Tensor:
    """Mean of ``per_row`` over ``keep`` rows; 0 (graph kept, no NaN) when none is kept."""
    per_row = per_row.masked_fill(~keep, 0.0)
    return per_row.sum() / keep.sum().clamp(min=1)


def _check(q: Tensor, k: Tensor, valid: Tensor | None) -> Tensor:
    if q.dim() != 2 or q.shape != k.shape:
        raise ValueError(f"q and k must both be (N, D); got {tuple(q.shape)}, {tuple(k.shape)}")
    if valid is None:
        return torch.ones(q.shape[0], dtype=torch.bool, device=q.device)
    if valid.shape != (q.shape[0],):
        raise ValueError(f"valid must be ({q.shape[0]},), got {tuple(valid.shape)}")
    return valid.bool()


def info_nce(
    q: Tensor,
    k: Tensor,
    temperature: float,
    valid: Tensor | None = None,
    gather_distributed: bool = False,
    extra_negatives: Tensor | None = None,
) -> Tensor:
    """InfoNCE with in-batch negatives (MoCo/SimCLR form, one direction).

    ``L_i = -log( exp(s_ii / t) / sum_{j valid} exp(s_ij / t) )``, ``s_ij = cos(q_i, k_j)``,
    averaged over valid queries. Negatives of ``q_i``: every other valid key (of all ranks when
    ``gather_distributed``).

    Args:
        q: ``(N, D)`` queries. k: ``(N, D)`` keys; ``k[i]`` is the positive of ``q[i]``.
        temperature: ``t > 0``.
        valid: ``(N,)`` bool, default all valid.
        gather_distributed: take negatives from the keys of all ranks.
        extra_negatives: optional ``(Q, D)`` further negatives, e.g. a MoCo queue (not gathered).

    Returns:
        scalar loss (0 with the graph kept when there is no valid query).
    """
    valid = _check(q, k, valid)
    k_all, valid_all, _, offset = _keys_and_masks(k, valid, None, gather_distributed)
    if extra_negatives is not None:
        k_all = torch.cat([k_all, extra_negatives.to(k_all.dtype)])
        valid_all = torch.cat([valid_all, valid_all.new_ones(extra_negatives.shape[0])])
    logits = _masked_logits(q, k_all, valid_all, temperature)
    target = torch.arange(q.shape[0], device=q.device) + offset
    per_row = F.cross_entropy(logits, target, reduction="none")
    return _mean_over(per_row, valid)


def multi_positive_info_nce(
    q: Tensor,
    k: Tensor,
    labels_q: Tensor,
    labels_k: Tensor,
    temperature: float,
    valid: Tensor | None = None,
    gather_distributed: bool = False,
) -> Tensor:
    """Supervised (multi-positive) InfoNCE, SupCon's ``L_out`` with keys from the other view.

    Positives of ``q_i``: ``P(i) = {i} U {j : labels_k[j] == labels_q[i] > 0}`` among valid keys
    (label 0 = unknown class: only the box itself). With ``log p_ij`` the log-softmax of
    ``s_ij / t`` over all valid keys: ``L_i = -1/|P(i)| * sum_{j in P(i)} log p_ij``, averaged
    over valid queries.

    Args:
        q: ``(N, D)`` queries. k: ``(N, D)`` keys; ``k[i]`` is the same box as ``q[i]``.
        labels_q: ``(N,)`` int class of each query box, 0 = unknown.
        labels_k: ``(N,)`` int class of each key box, 0 = unknown.
        temperature: ``t > 0``.
        valid: ``(N,)`` bool, default all valid.
        gather_distributed: take keys (negatives and positives) from all ranks.

    Returns:
        scalar loss (0 with the graph kept when there is no valid query).
    """
    valid = _check(q, k, valid)
    if labels_q.shape != (q.shape[0],) or labels_k.shape != (k.shape[0],):
        raise ValueError(f"labels_q and labels_k must be ({q.shape[0]},)")
    k_all, valid_all, labels_all, offset = _keys_and_masks(k, valid, labels_k, gather_distributed)
    log_prob = F.log_softmax(_masked_logits(q, k_all, valid_all, temperature), dim=1)
    same_box = torch.zeros_like(log_prob, dtype=torch.bool)
    rows = torch.arange(q.shape[0], device=q.device)
    same_box[rows, rows + offset] = True
    same_class = (labels_q[:, None] == labels_all[None, :]) & (labels_q[:, None] > 0)
    positives = (same_box | same_class) & valid_all[None, :]
    n_pos = positives.sum(dim=1)
    per_row = -torch.where(positives, log_prob, 0.0).sum(dim=1) / n_pos.clamp(min=1)
    return _mean_over(per_row, valid & (n_pos > 0))
