"""The run's schedule (iterations, epochs, alpha) and learning-rate schedules: linear warmup,
then step decay ("1x": x0.1 at 8/12 and 11/12) or cosine."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class Schedule:
    """How long a run trains and what follows its progress; shared by the sampler, the data and
    the trainer, so none of them keeps a copy of ``max_iters`` or of the alpha curve.

    Iterations count optimizer steps; a step takes ``accumulate`` micro-batches, so micro-batch
    ``m`` belongs to iteration ``m // accumulate``. The position itself (micro-batches used) is
    the data's state, not the schedule's: the schedule only maps positions to values.

    Args:
        max_iters: optimizer steps of the whole run (:func:`total_iters`).
        iters_per_epoch: nominal micro-batches per sampler epoch (``ceil(N / global batch)``).
        accumulate: micro-batches per optimizer step (``train.accumulate``).
        alpha: DRB's ``alpha(p)`` for progress ``p`` in [0, 1] (None: the run has no alpha).
        alpha_per: ``"iteration"``: each batch has the alpha of its own iteration ``g``,
            ``p = g / (max_iters - 1)`` (the last iteration reaches ``alpha(1)``); ``"epoch"``:
            the epoch-list sampler fixes alpha when an epoch starts, from the
            :meth:`progress` of that iteration.
    """

    max_iters: int
    iters_per_epoch: int
    accumulate: int = 1
    alpha: Callable[[float], float] | None = None
    alpha_per: str = "iteration"

    def __post_init__(self) -> None:
        for name in ("max_iters", "iters_per_epoch", "accumulate"):
            if getattr(self, name) < 1:
                raise ValueError(f"Schedule: {name} = {getattr(self, name)}, must be >= 1")
        if self.alpha_per not in ("iteration", "epoch"):
            raise ValueError(f"Schedule: alpha_per={self.alpha_per!r}, allowed: iteration, epoch")

    @classmethod
    def from_train(
        cls,
        train_cfg,
        iters_per_epoch: int,
        alpha: Callable[[float], float] | None = None,
        alpha_per: str = "iteration",
    ) -> Schedule:
        """The schedule of a ``train`` section over data of ``iters_per_epoch`` batches."""
        return cls(
            total_iters(train_cfg, iters_per_epoch),
            iters_per_epoch,
            int(train_cfg.accumulate),
            alpha,
            alpha_per,
        )

    def iteration_of(self, micro_batches: int) -> int:
        """Optimizer steps done once ``micro_batches`` micro-batches have been used."""
        return micro_batches // self.accumulate

    def progress(self, iteration: int) -> float:
        """``iteration / max_iters``: the fraction of the run done after ``iteration`` steps."""
        return iteration / self.max_iters

    def alpha_of_iteration(self, iteration: int) -> float:
        """The alpha of a batch of optimizer iteration ``iteration`` (0-based) with
        ``alpha_per="iteration"``: ``alpha(g / (max_iters - 1))``."""
        return self._alpha(iteration / max(self.max_iters - 1, 1))

    def _alpha(self, progress: float) -> float:
        if self.alpha is None:
            raise ValueError("Schedule: this run has no alpha schedule")
        return float(self.alpha(progress))


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
