"""Training hooks (detectron2's ``HookBase``): what a method adds around the loop.

The :class:`~drcl.engine.trainer.Trainer` knows nothing about a method. A runner registers
hooks (``trainer.register_hooks``); the trainer calls, in registration order,
``before_train()`` once before the first step, ``on_batch(batch)`` for every training batch as
the data hands it over (before it moves to the device; ``train.accumulate`` batches a step),
``after_step(iteration, progress)`` after every optimizer step (``iteration`` counts steps done,
``progress = iteration / max_iters``), ``logs()`` at each logging step (its scalars join the
``metrics.jsonl`` row) and ``after_train()`` once at the end, also when training fails.
"""

from __future__ import annotations

from typing import Any

from torch import nn

__all__ = ["EMAHook", "HookBase"]


class HookBase:
    """A hook that does nothing; subclasses override what they need."""

    def before_train(self) -> None:
        """Called once, after a resume, before the first step."""

    def on_batch(self, batch: Any) -> None:
        """Called with each training batch, on the CPU, before the model sees it."""

    def after_step(self, iteration: int, progress: float) -> None:
        """Called after each optimizer step."""

    def logs(self) -> dict[str, float]:
        """Scalars for the log row of this logging step (every rank calls it)."""
        return {}

    def after_train(self) -> None:
        """Called once when training ends (normally or by an exception)."""


class EMAHook(HookBase):
    """The EMA target update of a self-supervised model after each step.

    Args:
        model: a module with ``update_target(progress)`` (2DRCL's and the box stage's models:
            momentum follows ``progress`` in [0, 1], SPEC "HCL").
    """

    def __init__(self, model: nn.Module) -> None:
        self.model = model

    def after_step(self, iteration: int, progress: float) -> None:
        self.model.update_target(progress)
