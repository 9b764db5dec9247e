"""What every training run does around the loop: device and process group, work dir, seeds,
DDP wrapping, optimizer + schedule + :class:`Trainer`. Takes the ``train`` section only; the
stage runners (``drcl.pretrain.runner``, ``drcl.finetune.runner``) read the root config."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from drcl.config.schema import TrainConfig
from drcl.engine import distributed as dist
from drcl.engine import runtime
from drcl.engine.schedule import build_optimizer, build_scheduler, total_iters
from drcl.engine.trainer import EpochData, Trainer, seed_everything
from drcl.utils.io import ensure_writable_dir


def start_run(train: TrainConfig, work_dir: str | Path) -> tuple[torch.device, dist.DistInfo, Path]:
    """Resolve the device, join the process group (torchrun), check the work dir is writable
    and seed — before any data or model is built."""
    device = dist.resolve_device(train.device)
    info = dist.init_from_env(device)
    work_dir = ensure_writable_dir(work_dir)
    seed_everything(train.seed, train.deterministic)
    return device, info, work_dir


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


def make_trainer(
    train: TrainConfig,
    model: torch.nn.Module,
    data: EpochData,
    work_dir: Path,
    device: torch.device,
    info: dist.DistInfo,
    lr: float,
    weight_decay: float,
    sync_bn: bool = False,
    state_module: torch.nn.Module | None = None,
    cost_info: dict[str, Any] | None = None,
) -> Trainer:
    """SGD/AdamW over the trainable parameters of ``model``, warmup + step/cosine schedule over
    ``train.max_iters`` (or ``train.epochs`` epochs of ``data``), and the engine.

    ``cost_info`` goes into the run's ``cost.json`` (``stage``, ``init``: the weights it started
    from, so that ``drcl report`` can add up the cost of a chain of stages)."""
    apply_runtime(train, model, data, device, info)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = build_optimizer([{"params": params}], train, lr, weight_decay)
    max_iters = total_iters(train, data.iters_per_epoch)
    return Trainer(
        wrap_ddp(model, device, sync_bn),
        optimizer,
        build_scheduler(optimizer, max_iters, train),
        data,
        train,
        work_dir,
        max_iters,
        device,
        info,
        state_module=state_module,
        cost_info=cost_info,
    )
