"""The training engine shared by pre-training and fine-tuning.

Iteration-based (detectron2 style): ``max_iters = epochs * iters_per_epoch`` with
``iters_per_epoch = ceil(num_images / global_batch)``; the data object cycles through sampler
epochs as needed (repeat factor sampling changes an epoch's length). A "1x" schedule is 12 such
epochs with lr x0.1 at 8/12 and 11/12 of training.

The model is any module whose ``forward(batch)`` returns a dict of scalar tensors with the total
under ``"loss"`` and the terms under ``"loss_*"``.
"""

from __future__ import annotations

import logging
import math
import random
import time
from collections.abc import Iterator, Sequence
from contextlib import nullcontext
from pathlib import Path
from typing import Any, NamedTuple, Protocol

import torch

from drcl.config.schema import TrainConfig
from drcl.engine import checkpoint as ckpt
from drcl.engine.distributed import DistInfo, all_reduce_mean
from drcl.engine.hooks import HookBase
from drcl.engine.logging import MetricLogger
from drcl.engine.runtime import batch_to_channels_last
from drcl.engine.schedule import Schedule, build_scheduler
from drcl.utils.errors import NoBatchError
from drcl.utils.io import ensure_writable_dir
from drcl.utils.run_dir import RunDir, read_metrics

log = logging.getLogger(__name__)


class NonFiniteLossError(FloatingPointError):
    """A loss term became NaN or inf."""


class EpochData(Protocol):
    """What the engine needs from the data side.

    The data object owns the run's position: ``position`` counts the micro-batches it handed to
    the loop, ``state_dict`` says where its stream stands, ``load_state_dict`` puts it back, and
    ``batches()`` continues from there, epoch after epoch. The trainer's iteration is derived
    from ``position`` (:meth:`Schedule.iteration_of`); it never tells the data what to skip.
    """

    iters_per_epoch: int
    position: int

    def batches(self) -> Iterator[Any]:
        """Endless batches on this rank, from the current position."""

    def to_device(self, batch: Any, device: torch.device) -> Any: ...

    def logs(self) -> dict[str, float]:
        """Extra scalars to log (e.g. the DRB ``alpha``)."""

    def state_dict(self) -> dict[str, Any]: ...

    def load_state_dict(self, state: dict[str, Any]) -> None: ...


class RunEnv(NamedTuple):
    """Where and on what a run trains (:func:`drcl.engine.setup.start_run`)."""

    device: torch.device
    dist: DistInfo
    work_dir: Path


def seed_everything(seed: int, deterministic: bool) -> None:
    random.seed(seed)
    torch.manual_seed(seed)
    if deterministic:
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.benchmark = False


class Trainer:
    """Runs the loop: AMP, accumulation, clipping, non-finite checks, logs, resume; what happens
    around a step (checkpoints, cost, EMA, probes) is hooks (:mod:`drcl.engine.hooks`).

    Args:
        model: module to train (may be DDP-wrapped); ``forward(batch) -> dict`` of losses.
        optimizer: built by the caller.
        data: an :class:`EpochData`; its state, saved in checkpoints, is the run's position.
        schedule: the run's :class:`~drcl.engine.schedule.Schedule` (the data's too).
        hooks: registered in this order (more with :meth:`register_hooks`).
        cfg: the ``train`` section (amp, accumulation, clipping, logging, ``nonfinite``).
        env: device, process group and work dir.
        lr_scheduler: steps once per optimizer step; default: warmup + ``train.schedule`` over
            ``schedule.max_iters`` (:func:`~drcl.engine.schedule.build_scheduler`).
        state_module: the module whose ``state_dict`` checkpoints hold under ``"model"``
            (default: the unwrapped ``model``); fine-tuning passes the bare detector so that a
            checkpoint has torchvision's own keys.
    """

    def __init__(
        self,
        model: torch.nn.Module,
        optimizer: torch.optim.Optimizer,
        data: EpochData,
        schedule: Schedule,
        hooks: Sequence[HookBase] = (),
        *,
        cfg: TrainConfig,
        env: RunEnv,
        lr_scheduler: torch.optim.lr_scheduler.LRScheduler | None = None,
        state_module: torch.nn.Module | None = None,
    ):
        if cfg.accumulate != schedule.accumulate:
            raise ValueError(
                f"train.accumulate = {cfg.accumulate}, the schedule's {schedule.accumulate}"
            )
        self.model, self.optimizer, self.data, self.schedule = model, optimizer, data, schedule
        self.cfg, self.env = cfg, RunEnv(env.device, env.dist, ensure_writable_dir(env.work_dir))
        self.work_dir, self.device = self.env.work_dir, env.device
        self.scheduler = lr_scheduler or build_scheduler(optimizer, schedule.max_iters, cfg)
        self.hooks: list[HookBase] = []
        self.register_hooks(hooks)
        self.state_module = state_module
        self.skipped_steps = 0
        use_fp16 = cfg.amp == "fp16" and env.device.type == "cuda"
        self.scaler = torch.amp.GradScaler("cuda", enabled=use_fp16)
        # modules that collect gradient statistics in backward hooks (EFL) must see unscaled
        # gradients of applied steps only: they stage per step and get the scale afterwards
        self._grad_stats = [m for m in model.modules() if hasattr(m, "end_grad_step")]
        for m in self._grad_stats:
            m.defer_grad_stats()

    @property
    def iteration(self) -> int:
        """Optimizer steps done, from the data's position (the one record of it)."""
        return self.schedule.iteration_of(self.data.position)

    # ---- checkpoints -------------------------------------------------------------------
    def _unwrapped(self) -> torch.nn.Module:
        if self.state_module is not None:
            return self.state_module
        return getattr(self.model, "module", self.model)

    def state_dict(self) -> dict[str, Any]:
        return {
            "model": self._unwrapped().state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict(),
            "iteration": self.iteration,  # a check: the data's position decides
            "skipped_steps": self.skipped_steps,
            "rng": {"torch": torch.get_rng_state(), "python": list(random.getstate()[1])},
            "data": self.data.state_dict(),
            "hooks": {h.state_key: h.state_dict() for h in self.hooks if h.state_key},
        }

    def load_state_dict(self, state: dict[str, Any], path: str | Path = "checkpoint") -> None:
        """Restore ``state`` (read from ``path``, named in errors).

        Raises:
            ValueError: the checkpoint's iteration disagrees with its data position (e.g. it
                was written with another ``train.accumulate``), or it lacks a part.
        """
        missing = [k for k in ("iteration", "data", "hooks") if k not in state]
        if missing:
            raise ValueError(
                f"{path}: no {', '.join(missing)} (a checkpoint of an older drcl); start a new "
                "--work-dir"
            )
        ckpt.load_into(self._unwrapped(), state["model"], path)
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.scaler.load_state_dict(state["scaler"])
        self.data.load_state_dict(state["data"])
        if self.iteration != state["iteration"]:
            raise ValueError(
                f"{path}: saved at iteration {state['iteration']}, but its data position "
                f"({self.data.position} micro-batches, train.accumulate={self.schedule.accumulate})"
                f" is iteration {self.iteration}; resume with the run's own train.accumulate"
            )
        self.skipped_steps = state.get("skipped_steps", 0)
        torch.set_rng_state(state["rng"]["torch"])
        random.setstate((3, tuple(state["rng"]["python"]), None))
        for h in self.hooks:
            if h.state_key:
                h.load_state_dict(state["hooks"].get(h.state_key, {}))

    def resume(self) -> bool:
        """Load the newest good checkpoint; returns False when there is none. Call after the
        hooks with state are registered."""
        path = ckpt.latest_good_checkpoint(self.work_dir)
        if path is None:
            return False
        self.load_state_dict(ckpt.load_state(path, map_location=self.device), path)
        _truncate_metrics(RunDir(self.work_dir).metrics, self.iteration)
        if self.env.dist.is_main:
            log.info("resumed from %s at iteration %d", path, self.iteration)
        return True

    # ---- the loop ----------------------------------------------------------------------
    def _autocast(self):
        if self.cfg.amp == "none" or self.device.type != "cuda":
            return nullcontext()
        dtype = torch.bfloat16 if self.cfg.amp == "bf16" else torch.float16
        return torch.autocast("cuda", dtype=dtype)

    def _check_finite(self, losses: dict[str, torch.Tensor], iteration: int) -> bool:
        bad = [k for k, v in losses.items() if not torch.isfinite(v.detach()).all()]
        if not bad:
            return True
        msg = f"iteration {iteration}: non-finite loss term(s) {', '.join(bad)}"
        if self.cfg.nonfinite == "skip":
            self.skipped_steps += 1
            log.warning("warning: %s; step skipped (%d so far)", msg, self.skipped_steps)
            return False
        raise NonFiniteLossError(f"{msg}; the last good checkpoint is kept in {self.work_dir}")

    def _step(self, stream: Iterator[Any]) -> dict[str, float]:
        """One optimizer step over ``accumulate`` micro-batches; returns scalar logs."""
        t0 = time.perf_counter()
        data_time, sums, ok = 0.0, {}, True
        it = self.iteration  # the step's own number, before its batches move the position
        self.optimizer.zero_grad(set_to_none=True)
        scale = self.scaler.get_scale() if self._grad_stats else 1.0
        for _ in range(self.cfg.accumulate):
            td = time.perf_counter()
            batch = next(stream, None)
            if batch is None:  # an EpochData stream is endless; one that ends is broken
                raise NoBatchError(
                    f"the training data ended after {self.data.position} batches",
                    hint="is the training set empty, or was every image skipped "
                    "(data.on_error=skip)? run `drcl data check` on data.train_ann",
                )
            for hook in self.hooks:
                hook.on_batch(batch)
            batch = self.data.to_device(batch, self.device)
            if self.cfg.channels_last:  # NHWC images for NHWC weights (drcl.engine.runtime)
                batch = batch_to_channels_last(batch)
            data_time += time.perf_counter() - td
            with self._autocast():
                losses = self.model(batch)
            ok = self._check_finite(losses, it) and ok
            if ok:
                self.scaler.scale(losses["loss"] / self.cfg.accumulate).backward()
            for k, v in losses.items():
                sums[k] = sums.get(k, 0.0) + float(v.detach()) / self.cfg.accumulate
        if ok:
            self._optimizer_step()
        if self._grad_stats:
            # GradScaler lowers its scale exactly when it skipped the step (inf/NaN gradients)
            applied = ok and self.scaler.get_scale() >= scale
            for m in self._grad_stats:
                m.end_grad_step(scale, applied)
        self.scheduler.step()
        sums["data_time"], sums["step_time"] = data_time, time.perf_counter() - t0
        return sums

    def _optimizer_step(self) -> None:
        if self.cfg.grad_clip > 0:
            self.scaler.unscale_(self.optimizer)
            params = [p for g in self.optimizer.param_groups for p in g["params"]]
            torch.nn.utils.clip_grad_norm_(params, self.cfg.grad_clip)
        self.scaler.step(self.optimizer)
        self.scaler.update()

    def register_hooks(self, hooks: Sequence[HookBase]) -> None:
        """Add hooks (:mod:`drcl.engine.hooks`), called in registration order."""
        for hook in hooks:
            hook.trainer = self
            self.hooks.append(hook)

    def fit(self) -> int:
        """Train until ``schedule.max_iters``; returns the iteration reached. Calls the hooks
        around it (checkpoints are :class:`~drcl.engine.hooks.CheckpointHook`'s)."""
        try:
            for hook in self.hooks:
                hook.before_train()
            return self._fit()
        finally:
            for hook in self.hooks:
                hook.after_train()

    def _fit(self) -> int:
        max_iters, is_main = self.schedule.max_iters, self.env.dist.is_main
        logger = MetricLogger(self.work_dir, max_iters, self.iteration, is_main)
        stream = self.data.batches()
        self.model.train()
        try:
            while self.iteration < max_iters:
                logs = self._step(stream)
                it = self.iteration
                logger.step()
                if it % self.cfg.log_every == 0 or it == max_iters:
                    self._log(logger, logs, it)
                for hook in self.hooks:
                    hook.after_step(it, self.schedule.progress(it))
        finally:
            logger.close()
        return self.iteration

    def _log(self, logger: MetricLogger, logs: dict[str, float], iteration: int) -> None:
        dist = self.env.dist
        logs = all_reduce_mean(logs, self.device) if dist.world_size > 1 else logs
        record = {"iter": iteration, "lr": self.optimizer.param_groups[0]["lr"]}
        record.update(logs)
        record.update(self.data.logs())
        for hook in self.hooks:
            record.update(hook.logs())
        if self.skipped_steps:
            record["skipped_steps"] = self.skipped_steps
        logger.log(record)


def _truncate_metrics(path: Path, iteration: int) -> None:
    """Drop log lines newer than the resumed iteration (they will be written again)."""
    if not path.is_file():
        return
    import json

    from drcl.utils.io import atomic_write_text

    rows = [r for r in read_metrics(path) if r.get("iter", 0) <= iteration]
    atomic_write_text(path, "".join(json.dumps(r) + "\n" for r in rows))


def iters_per_epoch(num_images: int, global_batch: int) -> int:
    return max(1, math.ceil(num_images / global_batch))
