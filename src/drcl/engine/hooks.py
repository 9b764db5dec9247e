"""Training hooks (detectron2's ``HookBase``): what a method adds around the loop.

The :class:`~drcl.engine.trainer.Trainer` knows nothing about a method. A runner registers
hooks (``trainer.register_hooks``); the trainer calls, in registration order,
``before_train()`` once before the first step, ``on_batch(batch)`` for every training batch as
the data hands it over (before it moves to the device; ``train.accumulate`` batches a step),
``after_step(iteration, progress)`` after every optimizer step (``iteration`` counts steps done,
``progress = iteration / max_iters``; the step's ``metrics.jsonl`` row is written just before),
``logs()`` at each logging step (its scalars join that row) and ``after_train()`` once at the
end, also when training fails.

``register_hooks`` sets ``hook.trainer``, so a hook can reach the run (its schedule, work dir,
state). A hook with a ``state_key`` has state of its own: ``state_dict()`` is saved in every
checkpoint under ``hooks/<state_key>`` and handed back to ``load_state_dict`` on resume.

The engine's own hooks: :class:`CostHook` (``cost.json``) and :class:`CheckpointHook`, which
:func:`drcl.engine.setup.make_trainer` registers first and last.
"""

from __future__ import annotations

from typing import Any

from torch import nn

from drcl.engine import checkpoint as ckpt
from drcl.engine.cost import CostMeter

__all__ = ["CheckpointHook", "CostHook", "EMAHook", "HookBase"]


class HookBase:
    """A hook that does nothing; subclasses override what they need."""

    trainer: Any  # the Trainer, set by its register_hooks (not imported: trainer imports hooks)
    state_key: str | None = None  # a hook with state saves it in checkpoints under this key

    def state_dict(self) -> dict[str, Any]:
        """What a checkpoint keeps of this hook (only hooks with a ``state_key``)."""
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state_dict` (on resume, before ``before_train``)."""

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


def is_checkpoint_step(iteration: int, every: int, max_iters: int) -> bool:
    """Checkpoints are written every ``every`` iterations and at the last one."""
    return iteration % every == 0 or iteration == max_iters


class CostHook(HookBase):
    """Times the loop and writes ``RUN/cost.json`` at every checkpoint step (rank 0); the
    running totals travel in the checkpoint, so a resumed run reports its whole cost
    (:mod:`drcl.engine.cost`).

    Args:
        meter: the run's :class:`~drcl.engine.cost.CostMeter`.
        every: iterations between records (the checkpoint interval).
    """

    state_key = "cost"

    def __init__(self, meter: CostMeter, every: int) -> None:
        self.meter, self.every = meter, every

    def before_train(self) -> None:
        self.meter.start(self.trainer.iteration)

    def after_step(self, iteration: int, progress: float) -> None:
        t = self.trainer
        if t.env.dist.is_main and is_checkpoint_step(iteration, self.every, t.schedule.max_iters):
            self.meter.write(t.env.work_dir, iteration)

    def state_dict(self) -> dict[str, Any]:
        return self.meter.state_dict()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.meter.load_state_dict(state)


class CheckpointHook(HookBase):
    """Saves the trainer's state every ``every`` iterations and at the last one (rank 0), keeping
    the newest ``keep`` checkpoints (:mod:`drcl.engine.checkpoint`). Register it last: a
    checkpoint must hold what the other hooks did in that step (the EMA update)."""

    def __init__(self, every: int, keep: int) -> None:
        if every < 1:
            raise ValueError(f"CheckpointHook: every = {every}, must be >= 1")
        self.every, self.keep = every, keep

    def after_step(self, iteration: int, progress: float) -> None:
        t = self.trainer
        if t.env.dist.is_main and is_checkpoint_step(iteration, self.every, t.schedule.max_iters):
            ckpt.save_checkpoint(t.state_dict(), t.env.work_dir, iteration, self.keep)
