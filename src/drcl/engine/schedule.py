"""Learning-rate schedules: linear warmup, then step decay ("1x": x0.1 at 8/12 and 11/12) or
cosine."""

from __future__ import annotations

import math

import torch


def lr_factor(
    it: int,
    max_iters: int,
    schedule: str,
    steps: list[float],
    gamma: float,
    warmup_iters: int,
    warmup_factor: float,
) -> float:
    """Multiplier of the base lr at iteration ``it`` (0-based).

    warmup: factor rises linearly from ``warmup_factor`` to 1 over ``warmup_iters`` (detectron2).
    step: ``gamma ** (number of milestones passed)``, milestones at ``round(s * max_iters)``.
    cosine: ``0.5 * (1 + cos(pi * it / max_iters))``.
    """
    if schedule == "step":
        milestones = [round(s * max_iters) for s in steps]
        factor = gamma ** sum(it >= m for m in milestones)
    elif schedule == "cosine":
        factor = 0.5 * (1.0 + math.cos(math.pi * min(it, max_iters) / max(max_iters, 1)))
    else:
        raise ValueError(f"train.schedule: got {schedule!r}, allowed: step, cosine")
    if it < warmup_iters:
        alpha = it / warmup_iters
        factor *= warmup_factor * (1 - alpha) + alpha
    return factor


def build_scheduler(
    optimizer: torch.optim.Optimizer, max_iters: int, train_cfg
) -> torch.optim.lr_scheduler.LambdaLR:
    warmup = min(train_cfg.warmup_iters, max_iters // 2)

    def fn(it: int) -> float:
        return lr_factor(
            it,
            max_iters,
            train_cfg.schedule,
            list(train_cfg.steps),
            train_cfg.gamma,
            warmup,
            train_cfg.warmup_factor,
        )

    return torch.optim.lr_scheduler.LambdaLR(optimizer, fn)


def build_optimizer(
    params: list[dict], train_cfg, lr: float, weight_decay: float
) -> torch.optim.Optimizer:
    """SGD (momentum, paper A.1) or AdamW; ``params`` are parameter groups."""
    if train_cfg.optimizer == "sgd":
        return torch.optim.SGD(
            params, lr=lr, momentum=train_cfg.momentum, weight_decay=weight_decay
        )
    if train_cfg.optimizer == "adamw":
        return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)
    raise ValueError(f"train.optimizer: got {train_cfg.optimizer!r}, allowed: sgd, adamw")


def total_iters(train_cfg, iters_per_epoch: int) -> int:
    """The run's length in iterations: ``train.max_iters``, else ``train.epochs`` epochs of
    ``iters_per_epoch`` (the one place it is computed: engine, sampler, dose, replay)."""
    return train_cfg.max_iters or train_cfg.epochs * iters_per_epoch


def scaled_lr(train_cfg) -> float:
    """Linear scaling rule: lr is given for a global batch of 16."""
    if not train_cfg.scale_lr:
        return train_cfg.lr
    return train_cfg.lr * train_cfg.batch_size * train_cfg.accumulate / 16
