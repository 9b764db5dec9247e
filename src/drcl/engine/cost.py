"""What a training run cost: ``RUN/cost.json``, written by the engine for every stage.

Every run that goes through :class:`~drcl.engine.trainer.Trainer` (2DRCL pre-training, the
box-domain stage, fine-tuning, the class-agnostic proposal detector) records its wall time,
iterations, images seen, throughput and peak memory, the numbers of the paper's cost table
(VRAM, training time). On CPU the memory figure is the peak resident set size of the process
since the loop started (rank 0's under DDP, DataLoader workers not included): on Linux the peak
is reset at the start (``/proc/self/clear_refs``), so runs that share a process (``drcl ablate``,
``drcl demo``) each report their own peak, not the largest so far; elsewhere it is ``getrusage``'s
``ru_maxrss``, the process's peak since it began. On GPU it is
``torch.cuda.max_memory_allocated`` since the loop started (rank 0's device).

Wall time and images accumulate across resumes: the running totals travel in the checkpoint
(:meth:`CostMeter.state_dict`), so a run killed and resumed reports its whole training time,
not only its last session.
"""

from __future__ import annotations

import os
import platform
import resource
import sys
import time
from pathlib import Path
from typing import Any

import torch

from drcl.utils.io import atomic_write_json
from drcl.utils.run_dir import COST

COST_FILE = COST


def peak_rss_bytes() -> int:
    """Peak resident set size of this process so far (bytes; ``ru_maxrss`` is KiB on Linux)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(peak) if sys.platform == "darwin" else int(peak) * 1024


def reset_peak_rss() -> bool:
    """Start a new peak-RSS window for this process; False where the OS cannot (not Linux).

    Writing ``5`` to ``/proc/self/clear_refs`` resets the kernel's RSS high-water mark, which
    ``ru_maxrss`` reads for a live process (Linux >= 4.0).
    """
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        return False
    return True


def device_name(device: torch.device) -> str:
    """The GPU's name, or on CPU the processor's model name (``/proc/cpuinfo``) and core count."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    model = platform.processor() or platform.machine() or "cpu"
    try:
        with open("/proc/cpuinfo") as f:
            names = [ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name")]
        model = names[0] if names else model
    except OSError:
        pass
    return f"{model} ({os.cpu_count()} cores)"


class CostMeter:
    """Accumulates wall time and images over the training loop and writes ``cost.json``.

    Args:
        device: the training device (CUDA peak memory is read only there).
        world_size: processes of the run (images are counted globally).
        images_per_step: global images per optimizer step (``batch_size * accumulate``).
        info: extra fields for the record, e.g. ``{"stage": "finetune", "init": path}``.
    """

    def __init__(
        self,
        device: torch.device,
        world_size: int,
        images_per_step: int,
        info: dict[str, Any] | None = None,
    ) -> None:
        self.device, self.world_size = device, world_size
        self.images_per_step = images_per_step
        self.info = dict(info or {})
        self.wall_s = 0.0  # training seconds of earlier sessions (restored on resume)
        self.earlier_peak_rss = 0  # peak RSS of earlier sessions (restored on resume)
        self.iterations = 0
        self._start: float | None = None
        self._start_iter = 0

    def start(self, iteration: int) -> None:
        """Start timing at ``iteration`` (the resumed one, or 0); resets the CUDA peak."""
        self._start, self._start_iter = time.perf_counter(), iteration
        self.iterations = iteration
        reset_peak_rss()
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)

    def elapsed(self) -> float:
        """Training seconds so far, earlier sessions included."""
        extra = 0.0 if self._start is None else time.perf_counter() - self._start
        return self.wall_s + extra

    def record(self, iteration: int) -> dict[str, Any]:
        """The cost record at ``iteration`` (see the module docstring for the fields)."""
        wall = self.elapsed()
        images = iteration * self.images_per_step
        cuda = self.device.type == "cuda"
        return {
            **self.info,
            "wall_time_s": round(wall, 6),
            "iterations": iteration,
            "images_seen": images,
            "images_per_s": round(images / wall, 3) if wall > 0 else None,
            "peak_rss_bytes": max(self.earlier_peak_rss, peak_rss_bytes()),
            "peak_cuda_bytes": int(torch.cuda.max_memory_allocated(self.device)) if cuda else None,
            "device": self.device.type,
            "device_name": device_name(self.device),
            "world_size": self.world_size,
            "torch_version": torch.__version__,
        }

    def write(self, work_dir: Path, iteration: int) -> Path:
        """Write ``work_dir/cost.json`` atomically; returns its path."""
        return atomic_write_json(work_dir / COST_FILE, self.record(iteration), indent=1)

    def state_dict(self) -> dict[str, Any]:
        return {"wall_s": self.elapsed(), "peak_rss": max(self.earlier_peak_rss, peak_rss_bytes())}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.wall_s = float(state.get("wall_s", 0.0))
        self.earlier_peak_rss = int(state.get("peak_rss", 0))
