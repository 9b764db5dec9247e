"""Box-level InfoNCE with instance ids (AlignDet's box-domain contrastive loss).

Every pseudo box of a batch has a unique id; every RoI carries the id of the box it matched. For
an id ``i`` with online RoI embeddings ``q_1..q_a`` (queries) and target RoI embeddings
``k_1..k_b`` (keys, from the other view), and ``N_i`` the online and target embeddings of every
other id (detached), all L2-normalised, with cosine logits over a temperature ``t``:

    L_i = mean_{r, s} [ -q_r.k_s / t + log( exp(q_r.k_s / t) + sum_{n in N_i} exp(q_r.n / t) ) ]
    L   = mean_i L_i

When id ``i`` has no target RoI, each query is its own key (``q_r`` detached), as in AlignDet's
code. Gradients reach the queries only: keys come from the EMA target and negatives are detached.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

# A masked logit: finite (no NaN gradients when an id has no negatives), far below any cosine/t.
_MASKED = -1e4


def per_id_info_nce(
    query: Tensor, query_ids: Tensor, key: Tensor, key_ids: Tensor, temperature: float = 0.5
) -> Tensor:
    """The per-id InfoNCE of the module docstring.

    Args:
        query: (R, D) online RoI embeddings (not normalised; with gradient).
        query_ids: (R,) int64 id of the pseudo box each query matched.
        key: (T, D) target RoI embeddings of the other view (treated as constants).
        key_ids: (T,) int64 ids of the keys.
        temperature: t of the cosine logits.

    Returns:
        Scalar loss; a zero connected to ``query`` when there is no query (R = 0).
    """
    if query.shape[0] != query_ids.shape[0] or key.shape[0] != key_ids.shape[0]:
        raise ValueError(
            f"per_id_info_nce: {query.shape[0]} queries with {query_ids.shape[0]} ids, "
            f"{key.shape[0]} keys with {key_ids.shape[0]} ids"
        )
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    if query.shape[0] == 0:
        return query.sum() * 0.0
    q = F.normalize(query, dim=1)
    k = F.normalize(key.detach(), dim=1)
    bank = torch.cat([q.detach(), k])  # the negatives' pool: every embedding of the batch
    bank_ids = torch.cat([query_ids, key_ids])
    neg = (q @ bank.T / temperature).masked_fill(query_ids[:, None] == bank_ids[None], _MASKED)
    neg_lse = torch.logsumexp(neg, dim=1)  # (R,) log sum over the other ids' embeddings
    same = query_ids[:, None] == key_ids[None]  # (R, T) the keys of each query's id
    pos = q @ k.T / temperature
    pair = torch.logaddexp(pos, neg_lse[:, None]) - pos  # (R, T) -log softmax of the key
    own = (q * q.detach()).sum(dim=1) / temperature  # the query as its own key
    own_loss = torch.logaddexp(own, neg_lse) - own
    n_keys = same.sum(dim=1)
    row = torch.where(
        n_keys > 0, (pair * same).sum(dim=1) / n_keys.clamp(min=1), own_loss
    )  # mean over a query's keys; every query of an id has the same keys
    uniq, inverse = torch.unique(query_ids, return_inverse=True)
    per_id = torch.zeros(len(uniq), dtype=row.dtype, device=row.device).index_add_(0, inverse, row)
    counts = torch.bincount(inverse, minlength=len(uniq)).to(row.dtype)
    return (per_id / counts).mean()
