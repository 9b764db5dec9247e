"""What every training run does around the loop: device and process group, work dir, seeds,
DDP wrapping, optimizer + schedule + :class:`Trainer`. Takes the ``train`` section only; the
stage runners (``drcl.pretrain.runner``, ``drcl.finetune.runner``) read the root config."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from drcl.config.schema import TrainConfig
from drcl.engine import distributed as dist
from drcl.engine import runtime
from drcl.engine.cost import CostMeter
from drcl.engine.epoch_data import SamplerEpochData
from drcl.engine.hooks import CheckpointHook, CostHook, HookBase
from drcl.engine.schedule import Schedule, build_optimizer
from drcl.engine.trainer import EpochData, RunEnv, Trainer, seed_everything
from drcl.utils.io import ensure_writable_dir


def start_run(train: TrainConfig, work_dir: str | Path) -> RunEnv:
    """Resolve the device, join the process group (torchrun), check the work dir is writable
    and seed — before any data or model is built. Unpacks as ``device, info, work_dir``."""
    device = dist.resolve_device(train.device)
    info = dist.init_from_env(device)
    work_dir = ensure_writable_dir(work_dir)
    seed_everything(train.seed, train.deterministic)
    return RunEnv(device, info, work_dir)


def wrap_ddp(model: torch.nn.Module, device: torch.device, sync_bn: bool) -> torch.nn.Module:
    """DDP (and SyncBN on CUDA when ``sync_bn``) when a process group is up."""
    if not dist.is_initialized():
        return model
    if sync_bn and device.type == "cuda":
        model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
    ids = [device.index] if device.type == "cuda" else None
    return torch.nn.parallel.DistributedDataParallel(model, device_ids=ids)


def apply_runtime(
    train: TrainConfig,
    model: torch.nn.Module,
    data: EpochData,
    device: torch.device,
    info: dist.DistInfo,
) -> None:
    """Workers, threads, memory layout and compilation (:mod:`drcl.engine.runtime`), before the
    optimizer is built; ``data.num_workers = -1`` is resolved here for the training data."""
    workers = int(getattr(data, "num_workers", 0))
    if hasattr(data, "num_workers"):
        workers = runtime.resolve_num_workers(workers, device, info.world_size)
        data.num_workers = workers
    threads = runtime.resolve_threads(train.threads, workers, device, info.world_size)
    if threads is not None:
        runtime.set_threads(threads)
    if train.channels_last:
        runtime.to_channels_last(model)
    if train.compile:
        runtime.compile_encoders(model)


def standard_hooks(
    train: TrainConfig, schedule: Schedule, env: RunEnv, cost_info: dict[str, Any] | None = None
) -> list[HookBase]:
    """The engine's hooks of every run, to register after the method's: ``cost.json``
    (:class:`CostHook`) and checkpoints (:class:`CheckpointHook`, last, so that a checkpoint holds
    the step's EMA update), every ``train.checkpoint_every`` iterations (0: every epoch's worth).

    ``cost_info`` goes into the run's ``cost.json`` (``stage``, ``init``: the weights it started
    from, so that ``drcl report`` can add up the cost of a chain of stages)."""
    every = train.checkpoint_every or schedule.iters_per_epoch
    images_per_step = int(train.batch_size) * int(train.accumulate)
    meter = CostMeter(env.device, env.dist.world_size, images_per_step, cost_info)
    return [CostHook(meter, every), CheckpointHook(every, train.keep_checkpoints)]


def make_trainer(
    train: TrainConfig,
    model: torch.nn.Module,
    data: SamplerEpochData,
    work_dir: Path,
    device: torch.device,
    info: dist.DistInfo,
    lr: float,
    weight_decay: float,
    sync_bn: bool = False,
    state_module: torch.nn.Module | None = None,
    cost_info: dict[str, Any] | None = None,
    hooks: Sequence[HookBase] = (),
) -> Trainer:
    """SGD/AdamW over the trainable parameters of ``model``, warmup + step/cosine schedule over
    ``data.schedule``, and the engine with ``hooks`` (the method's: EMA, probes), then the
    :func:`standard_hooks` (cost with ``cost_info``, checkpoints)."""
    apply_runtime(train, model, data, device, info)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = build_optimizer([{"params": params}], train, lr, weight_decay)
    env = RunEnv(device, info, work_dir)
    return Trainer(
        wrap_ddp(model, device, sync_bn),
        optimizer,
        data,
        data.schedule,
        [*hooks, *standard_hooks(train, data.schedule, env, cost_info)],
        cfg=train,
        env=env,
        state_module=state_module,
    )
