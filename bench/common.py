"""Shared helpers of the benchmarks: demo data cache, configs, timing, subprocess runs.

Every benchmark script can run alone (``python bench/<name>.py --help``); ``bench/run_all.py``
runs them all and prints one table. Results are fractions/ratios measured side by side in one
process (alternating, several repetitions, medians), so they hold on any machine of the same
kind; absolute seconds are printed for context only.
"""

from __future__ import annotations

import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
WORK = ROOT / "work" / "bench"
JSON_MARK = "BENCH_JSON "  # a subprocess prints its result on one line after this mark


def demo_data() -> dict[str, Path]:
    """The embedded demo dataset (size ``small``), generated once under ``work/bench/demo``."""
    out = WORK / "demo"
    paths = {
        "train_ann": out / "annotations" / "train.json",
        "val_ann": out / "annotations" / "val.json",
        "train_images": out / "train",
        "val_images": out / "val",
    }
    if not paths["val_ann"].is_file():
        from drcl.data.demo import make_demo_dataset

        return make_demo_dataset(out, seed=0, size="small")
    return paths


def data_overrides() -> list[str]:
    """``data.*`` path overrides pointing at the benchmark's demo data (made once)."""
    d = demo_data()
    return [
        f"data.{key}={d[key]}" for key in ("train_ann", "train_images", "val_ann", "val_images")
    ]


def bench_overrides(depth: int, size: int, batch: int, extra: list[str] | None = None) -> list[str]:
    """Config overrides for a step benchmark: standard widths (FPN 256, box head 1024)."""
    return [
        *data_overrides(),
        f"data.min_size={size}",
        f"data.max_size={size}",
        f"model.depth={depth}",
        f"pretrain.views.size={size}",
        f"train.batch_size={batch}",
        "train.warmup_iters=0",
        *(extra or []),
    ]


def median(values: list[float]) -> float:
    return float(statistics.median(values))


def alternate(
    fns: dict[str, Callable[[], Any]],
    reps: int,
    warmup: int = 1,
    sync: Callable[[], None] | None = None,
    clock: Callable[[], float] = time.perf_counter,
) -> dict[str, float]:
    """Run each function ``warmup`` times, then ``reps`` rounds in turn; median seconds each.

    Alternating (A, B, A, B, ...) spreads any drift of the machine (other load, thermal) over
    both sides equally, so the ratio of medians is meaningful even when the seconds are not.
    ``sync`` (e.g. ``torch.cuda.synchronize``) runs before each timer starts and stops, so
    asynchronous device work is counted in the step that launched it. ``clock`` may be
    ``time.process_time`` (CPU seconds of this process): on a CPU shared with other jobs, with
    one torch thread, it counts the work done rather than the time spent waiting for a core.
    """
    sync = sync or (lambda: None)
    for _ in range(warmup):
        for fn in fns.values():
            fn()
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(reps):
        for name, fn in fns.items():
            sync()
            t0 = clock()
            fn()
            sync()
            times[name].append(clock() - t0)
    return {name: median(ts) for name, ts in times.items()}


def peak_rss_mib() -> float:
    """Peak resident set size of this process (Linux ``ru_maxrss`` is in KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def emit(result: dict[str, Any]) -> None:
    """Print a subprocess result for :func:`run_json` to find."""
    print(JSON_MARK + json.dumps(result), flush=True)


def run_json(
    cmd: list[str], timeout: float = 1200, env: dict[str, str] | None = None
) -> dict[str, Any]:
    """Run ``cmd``; return the dict it printed with :func:`emit`; raise with its stderr on error."""
    proc = subprocess.run(
        cmd,
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=ROOT,
        env={**os.environ, **(env or {})},
    )
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith(JSON_MARK)]
    if proc.returncode != 0 or not lines:
        raise RuntimeError(
            f"{' '.join(cmd)} failed (exit {proc.returncode}):\n{proc.stderr[-3000:]}"
        )
    return json.loads(lines[-1][len(JSON_MARK) :])


def python_cmd(script: str, *args: str) -> list[str]:
    """``[sys.executable, bench/<script>, *args]``: the project's interpreter."""
    return [sys.executable, str(ROOT / "bench" / script), *args]


def machine_info() -> dict[str, str]:
    """CPU model, core count, torch version: the context every table needs."""
    import torch

    cpu = platform.processor() or platform.machine()
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
        for line in out.splitlines():
            if line.startswith("Model name:"):
                cpu = line.split(":", 1)[1].strip()
    except (OSError, subprocess.CalledProcessError):
        pass
    return {
        "cpu": cpu,
        "nproc": str(os.cpu_count()),
        "torch_threads": str(torch.get_num_threads()),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "gpu": "none (CPU only; GPU rows not measured)"
        if not torch.cuda.is_available()
        else torch.cuda.get_device_name(0),
        "date": time.strftime("%Y-%m-%d"),
    }
