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
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import torch

from drcl.config.schema import TrainConfig
from drcl.engine import checkpoint as ckpt
from drcl.engine.cost import CostMeter
from drcl.engine.distributed import DistInfo, all_reduce_mean
from drcl.engine.hooks import HookBase
from drcl.engine.logging import MetricLogger
from drcl.engine.runtime import batch_to_channels_last
from drcl.utils.errors import NoBatchError
from drcl.utils.io import ensure_writable_dir
from drcl.utils.run_dir import RunDir, read_metrics

log = logging.getLogger(__name__)


class NonFiniteLossError(FloatingPointError):
    """A loss term became NaN or inf."""


class EpochData(Protocol):
    """What the engine needs from the data side.

    The data object owns its position in the stream: ``state_dict`` says where it stands,
    ``load_state_dict`` puts it back, and the next ``batches`` call continues from there. The
    trainer checkpoints that state and never tells the data what to skip.
    """

    iters_per_epoch: int

    def batches(self, epoch: int, progress: float) -> Iterator[Any]:
        """Batches of sampler epoch ``epoch`` on this rank (from a restored position if any)."""

    def to_device(self, batch: Any, device: torch.device) -> Any: ...

    def logs(self) -> dict[str, float]:
        """Extra scalars to log (e.g. the DRB ``alpha``)."""

    def state_dict(self) -> dict[str, Any]: ...

    def load_state_dict(self, state: dict[str, Any]) -> None: ...


@dataclass
class Progress:
    iteration: int = 0
    epoch: int = 0


def seed_everything(seed: int, deterministic: bool) -> None:
    random.seed(seed)
    torch.manual_seed(seed)
    if deterministic:
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.benchmark = False


class Trainer:
    """Runs the loop: AMP, accumulation, clipping, non-finite checks, logs, checkpoints, resume.

    Args:
        model: module to train (may be DDP-wrapped); ``forward(batch) -> dict`` of losses.
        optimizer, scheduler: built by the caller (scheduler steps once per optimizer step).
        data: an :class:`EpochData`; its state is checkpointed under ``extra/data``.
        train_cfg: the ``train`` section of the config.
        work_dir: where checkpoints and logs go.
        max_iters: optimizer steps to run.
        extra_state: more objects with ``state_dict``/``load_state_dict`` saved in checkpoints.
        state_module: the module whose ``state_dict`` checkpoints hold under ``"model"``
            (default: the unwrapped ``model``); fine-tuning passes the bare detector so that a
            checkpoint has torchvision's own keys.
        cost_info: extra fields for ``cost.json`` (``stage``, ``init``; see
            :mod:`drcl.engine.cost`).
    """

    def __init__(
        self,
        model: torch.nn.Module,
        optimizer: torch.optim.Optimizer,
        scheduler: torch.optim.lr_scheduler.LRScheduler,
        data: EpochData,
        train_cfg: TrainConfig,
        work_dir: str | Path,
        max_iters: int,
        device: torch.device,
        dist: DistInfo,
        extra_state: dict[str, Any] | None = None,
        state_module: torch.nn.Module | None = None,
        cost_info: dict[str, Any] | None = None,
    ):
        self.model, self.optimizer, self.scheduler = model, optimizer, scheduler
        self.data, self.cfg = data, train_cfg
        self.work_dir = ensure_writable_dir(work_dir)
        self.max_iters, self.device, self.dist = max_iters, device, dist
        self.hooks: list[HookBase] = []
        self.extra_state = {"data": data, **(extra_state or {})}
        self.state_module = state_module
        self.progress = Progress()
        self.skipped_steps = 0
        self.resumed = False
        use_fp16 = train_cfg.amp == "fp16" and device.type == "cuda"
        self.scaler = torch.amp.GradScaler("cuda", enabled=use_fp16)
        images_per_step = int(train_cfg.batch_size) * int(train_cfg.accumulate)
        self.cost = CostMeter(device, dist.world_size, images_per_step, cost_info)
        # modules that collect gradient statistics in backward hooks (EFL) must see unscaled
        # gradients of applied steps only: they stage per step and get the scale afterwards
        self._grad_stats = [m for m in model.modules() if hasattr(m, "end_grad_step")]
        for m in self._grad_stats:
            m.defer_grad_stats()

    # ---- checkpoints -------------------------------------------------------------------
    def _unwrapped(self) -> torch.nn.Module:
        if self.state_module is not None:
            return self.state_module
        return getattr(self.model, "module", self.model)

    def state_dict(self) -> dict[str, Any]:
        p = self.progress
        return {
            "model": self._unwrapped().state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict(),
            "progress": {"iteration": p.iteration, "epoch": p.epoch},
            "skipped_steps": self.skipped_steps,
            "rng": {"torch": torch.get_rng_state(), "python": list(random.getstate()[1])},
            "extra": {k: v.state_dict() for k, v in self.extra_state.items()},
            "cost": self.cost.state_dict(),
        }

    def load_state_dict(self, state: dict[str, Any], path: str | Path = "checkpoint") -> None:
        ckpt.load_into(self._unwrapped(), state["model"], path)
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.scaler.load_state_dict(state["scaler"])
        p = state["progress"]
        self.progress = Progress(p["iteration"], p["epoch"])
        self.skipped_steps = state.get("skipped_steps", 0)
        torch.set_rng_state(state["rng"]["torch"])
        random.setstate((3, tuple(state["rng"]["python"]), None))
        for k, v in self.extra_state.items():
            v.load_state_dict(state["extra"][k])
        self.cost.load_state_dict(state.get("cost", {}))

    def resume(self) -> bool:
        """Load the newest good checkpoint; returns False when there is none."""
        path = ckpt.latest_good_checkpoint(self.work_dir)
        if path is None:
            return False
        self.load_state_dict(ckpt.load_state(path, map_location=self.device), path)
        self.resumed = True
        _truncate_metrics(RunDir(self.work_dir).metrics, self.progress.iteration)
        if self.dist.is_main:
            log.info("resumed from %s at iteration %d", path, self.progress.iteration)
        return True

    def save(self) -> None:
        if self.dist.is_main:
            ckpt.save_checkpoint(
                self.state_dict(), self.work_dir, self.progress.iteration, self.cfg.keep_checkpoints
            )
            self.cost.write(self.work_dir, self.progress.iteration)

    # ---- the loop ----------------------------------------------------------------------
    def _batch_stream(self) -> Iterator[Any]:
        """Endless batches; counts sampler epochs (the data knows its place inside one)."""
        p = self.progress
        # a restored epoch may have been used up already; a fresh one must give a batch
        fresh = not self.resumed
        while True:
            produced = False
            frac = p.iteration / max(self.max_iters, 1)
            for batch in self.data.batches(p.epoch, frac):
                produced = True
                yield batch
            if not produced and fresh:
                raise NoBatchError(
                    "the training data produced no batch",
                    hint="is the training set empty, or was every image skipped "
                    "(data.on_error=skip)? run `drcl data check` on data.train_ann",
                )
            p.epoch += 1
            fresh = True

    def _autocast(self):
        if self.cfg.amp == "none" or self.device.type != "cuda":
            return nullcontext()
        dtype = torch.bfloat16 if self.cfg.amp == "bf16" else torch.float16
        return torch.autocast("cuda", dtype=dtype)

    def _check_finite(self, losses: dict[str, torch.Tensor]) -> bool:
        bad = [k for k, v in losses.items() if not torch.isfinite(v.detach()).all()]
        if not bad:
            return True
        msg = f"iteration {self.progress.iteration}: non-finite loss term(s) {', '.join(bad)}"
        if self.cfg.nonfinite == "skip":
            self.skipped_steps += 1
            log.warning("warning: %s; step skipped (%d so far)", msg, self.skipped_steps)
            return False
        raise NonFiniteLossError(f"{msg}; the last good checkpoint is kept in {self.work_dir}")

    def _step(self, stream: Iterator[Any]) -> dict[str, float]:
        """One optimizer step over ``accumulate`` micro-batches; returns scalar logs."""
        t0 = time.perf_counter()
        data_time, sums, ok = 0.0, {}, True
        self.optimizer.zero_grad(set_to_none=True)
        scale = self.scaler.get_scale() if self._grad_stats else 1.0
        for _ in range(self.cfg.accumulate):
            td = time.perf_counter()
            batch = next(stream)
            for hook in self.hooks:
                hook.on_batch(batch)
            batch = self.data.to_device(batch, self.device)
            if self.cfg.channels_last:  # NHWC images for NHWC weights (drcl.engine.runtime)
                batch = batch_to_channels_last(batch)
            data_time += time.perf_counter() - td
            with self._autocast():
                losses = self.model(batch)
            ok = self._check_finite(losses) and ok
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
        self.hooks.extend(hooks)

    def fit(self) -> Progress:
        """Train until ``max_iters``; checkpoints every ``checkpoint_every`` iterations (or every
        epoch's worth of iterations) and at the end. Calls the hooks around it."""
        try:
            for hook in self.hooks:
                hook.before_train()
            return self._fit()
        finally:
            for hook in self.hooks:
                hook.after_train()

    def _fit(self) -> Progress:
        logger = MetricLogger(
            self.work_dir, self.max_iters, self.progress.iteration, self.dist.is_main
        )
        every = self.cfg.checkpoint_every or self.data.iters_per_epoch
        stream = self._batch_stream()
        self.model.train()
        self.cost.start(self.progress.iteration)
        try:
            while self.progress.iteration < self.max_iters:
                logs = self._step(stream)
                self.progress.iteration += 1
                it = self.progress.iteration
                for hook in self.hooks:
                    hook.after_step(it, it / self.max_iters)
                logger.step()
                if it % self.cfg.log_every == 0 or it == self.max_iters:
                    self._log(logger, logs)
                if it % every == 0 or it == self.max_iters:
                    self.save()
        finally:
            logger.close()
        return self.progress

    def _log(self, logger: MetricLogger, logs: dict[str, float]) -> None:
        logs = all_reduce_mean(logs, self.device) if self.dist.world_size > 1 else logs
        record = {"iter": self.progress.iteration, "lr": self.optimizer.param_groups[0]["lr"]}
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
