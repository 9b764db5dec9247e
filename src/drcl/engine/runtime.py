"""How a training process uses its machine: compute threads, DataLoader workers, memory layout
and compilation (``train.threads``, ``data.num_workers: -1``, ``train.channels_last``,
``train.compile``).

None of these changes what is computed; ``channels_last`` and ``compile`` change the order of
floating-point operations inside kernels (results equal to fp32 rounding, not bit for bit), so
they are switches, off by default. Thread and worker counts do not change the numbers: every
sample's augmentation is seeded by the sampler, whichever process draws it.

Why the automatic choices on a CPU: the step is convolutions run by the intra-op threads, which
meet at a barrier after every kernel; a DataLoader worker on the same cores takes time slices
from one of them and the other waits. On a few cores (<= 4) the data of a step costs a few
percent of the step (``bench/throughput.py`` measures both), so loading it in the training
process between steps, with every core computing, wastes less than a worker does. For the
same reason, threads are not given cores that other processes keep busy (:func:`busy_cpus`).
Thread counts may change the rounding of reductions inside kernels: a run that must resume bit
for bit on another machine sets ``train.threads`` to a fixed number.
"""

from __future__ import annotations

import dataclasses
import logging
import os

import torch

log = logging.getLogger(__name__)

AUTO = -1  # data.num_workers / train.threads value meaning "choose for this machine"
FEW_CORES = 4  # at most this many usable CPUs: load data in the training process (see above)


def usable_cpus() -> int:
    """CPUs this process may run on (its affinity mask, else ``os.cpu_count``)."""
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return max(1, os.cpu_count() or 1)


def resolve_num_workers(requested: int, device: torch.device, world_size: int = 1) -> int:
    """DataLoader workers per process: ``requested`` if >= 0, else chosen for the machine.

    Automatic: on CUDA, the CPUs of this process's share minus one for the loop, at most 8; on
    CPU, 0 up to :data:`FEW_CORES` CPUs per process (see the module docstring), else a quarter of
    them (at most 4), the rest computing.
    """
    if requested < AUTO:
        raise ValueError(f"data.num_workers={requested}: must be >= 0, or -1 for automatic")
    if requested >= 0:
        return requested
    share = max(1, usable_cpus() // max(1, world_size))
    if device.type == "cuda":
        return min(8, max(1, share - 1))
    return 0 if share <= FEW_CORES else min(4, share // 4)


def busy_cpus() -> float:
    """CPUs kept busy by other processes: the 1-minute load average less this process (0 where
    the OS has no load average)."""
    try:
        load = os.getloadavg()[0]
    except (AttributeError, OSError):
        return 0.0
    return max(0.0, load - 1.0)


def resolve_threads(
    requested: int, workers: int, device: torch.device, world_size: int = 1
) -> int | None:
    """Intra-op threads of the training process: ``requested`` if > 0; ``0``: None (torch's
    default, all CPUs, is kept); ``-1``: on CPU the CPUs of this process's share that neither
    its DataLoader workers nor other processes (:func:`busy_cpus`, at start) keep busy, at least
    1; on CUDA None.

    Why the other processes count: the threads meet at a barrier after every kernel, so when
    the OS lends the core of one of them to another process, the others wait; on a shared 2-core
    machine (load average ~20) a 2-thread pre-training step took 3.6x as long as a 1-thread one
    (docs/performance.md).
    """
    if requested < AUTO:
        raise ValueError(f"train.threads={requested}: must be >= 0, or -1 for automatic")
    if requested > 0:
        return requested
    if requested == 0 or device.type == "cuda":
        return None
    share = usable_cpus() // max(1, world_size) - workers
    free = round(usable_cpus() - busy_cpus()) // max(1, world_size) - workers
    return max(1, min(share, free))


def set_threads(n: int) -> None:
    """Set torch's intra-op threads to ``n`` (logged when it changes)."""
    if torch.get_num_threads() != n:
        log.info("torch threads: %d -> %d", torch.get_num_threads(), n)
        torch.set_num_threads(n)


def to_channels_last(model: torch.nn.Module) -> torch.nn.Module:
    """Store the 4-D weights NHWC: oneDNN then runs the convolutions (and keeps their outputs)
    in that layout, without reordering on every call."""
    return model.to(memory_format=torch.channels_last)


def batch_to_channels_last(batch: object) -> object:
    """4-D image tensors of a batch (dict values, list items, dataclass fields) to NHWC; the rest
    as is."""
    if torch.is_tensor(batch):
        return batch.contiguous(memory_format=torch.channels_last) if batch.dim() == 4 else batch
    if isinstance(batch, dict):
        return {k: batch_to_channels_last(v) for k, v in batch.items()}
    if isinstance(batch, list | tuple):
        return type(batch)(batch_to_channels_last(v) for v in batch)
    if dataclasses.is_dataclass(batch) and not isinstance(batch, type):  # PretrainBatch
        fields = {f.name: getattr(batch, f.name) for f in dataclasses.fields(batch)}
        return dataclasses.replace(
            batch, **{k: batch_to_channels_last(v) for k, v in fields.items()}
        )
    return batch


def compile_encoders(model: torch.nn.Module) -> int:
    """``torch.compile`` every ResNet body and FPN inside ``model`` in place; returns how many.

    Only the encoder parts are compiled: their shapes are fixed by the image size, while heads
    see data-dependent numbers of boxes (recompiling for each would cost more than it saves).
    """
    from torchvision.models._utils import IntermediateLayerGetter
    from torchvision.ops import FeaturePyramidNetwork

    found = [m for m in model.modules() if isinstance(m, IntermediateLayerGetter)]
    found += [m for m in model.modules() if isinstance(m, FeaturePyramidNetwork)]
    for m in found:
        m.compile()
    return len(found)
