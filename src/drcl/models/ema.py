"""Exponential moving average (EMA) of the online network into the target network (BYOL).

Momentum schedule (BYOL, Grill et al. 2020, eq. in Sec. 3.2), generalised to any end value:
``m(p) = m_end - (m_end - m0) * (cos(pi * p) + 1) / 2`` with ``p`` the training progress in
[0, 1]; with ``m_end = 1`` this is ``1 - (1 - m0) * (cos(pi p) + 1) / 2``: m0 at the start,
1 at the end (the target freezes as training converges).
"""

from __future__ import annotations

import math

import torch
from torch import nn


def ema_momentum(progress: float, start: float = 0.99, end: float = 1.0) -> float:
    """Cosine momentum ``m(p) = end - (end - start) * (cos(pi p) + 1) / 2``; p clipped to [0, 1]."""
    p = min(max(float(progress), 0.0), 1.0)
    return end - (end - start) * (math.cos(math.pi * p) + 1.0) / 2.0


@torch.no_grad()
def ema_update(target: nn.Module, online: nn.Module, momentum: float) -> None:
    """``theta_t <- m * theta_t + (1 - m) * theta_o`` for parameters; buffers are copied.

    Buffers (BatchNorm running statistics, ``num_batches_tracked``) are copied, not averaged:
    they are statistics of the online network's own inputs, and averaging an integer counter
    is meaningless. Both modules must have the same structure (``target`` a deepcopy of
    ``online``); parameters are paired by name and a mismatch raises.
    """
    t_params = dict(target.named_parameters())
    o_params = dict(online.named_parameters())
    if t_params.keys() != o_params.keys():
        diff = sorted(set(t_params) ^ set(o_params))
        raise ValueError(f"EMA target and online differ in parameters: {diff[:5]}")
    names = list(o_params)
    t_list = [t_params[n].data for n in names]
    o_list = [o_params[n].data.to(t_params[n].dtype) for n in names]
    if t_list:
        # lerp(t, o, 1 - m) = t + (1 - m) (o - t) = m t + (1 - m) o, one fused foreach kernel.
        torch._foreach_lerp_(t_list, o_list, 1.0 - momentum)
    t_bufs = dict(target.named_buffers())
    o_bufs = list(online.named_buffers())
    if o_bufs:
        torch._foreach_copy_([t_bufs[n] for n, _ in o_bufs], [b for _, b in o_bufs])
