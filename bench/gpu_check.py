"""The ten-minute CUDA validation kit: CUDA tests, GPU step cost, demo pre-train + fine-tune.

``bench/gpu_check.sh`` (``make install`` first, then this script) is what a person runs in the
short window a GPU is lent. It runs, each as a subprocess with its own time limit inside one
overall budget:

1. ``pytest -m cuda`` (AMP bf16/fp16 vs fp32, SyncBN under a single-process NCCL group,
   bit-exact ``--resume`` under deterministic algorithms, DRB loader with 8 pinned workers);
2. ``bench/step_cost.py --device cuda --amp bf16``: 2DRCL pre-training (checkpointing off and
   on) vs Faster R-CNN, R50-FPN, 800 px, batch 2 and 8: images/s and peak
   ``torch.cuda.max_memory_allocated``, ratios from one run;
3. the demo recipes on the GPU: ``drcl data make-demo``, ``drcl pretrain``, ``drcl finetune``,
   with each stage's wall time.

It prints a compact table and writes ``work/bench/gpu.json`` (atomically, at the end; a stage
that fails or times out is recorded as such and the others still run). Rerunning is safe: the
demo stages start from an empty ``work/gpu_check`` folder that this script owns.

Usage::

    bench/gpu_check.sh                    # everything, <= 10 minutes on one GPU
    bench/gpu_check.sh --dry-run          # print the plan, run nothing (works without a GPU)
    bench/gpu_check.sh --skip demo --batches 2
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
JSON_MARK = "BENCH_JSON "  # as bench/common.py: a benchmark prints its result after this mark
STAGE_GROUPS = ("tests", "bench", "demo")
# cuBLAS needs a fixed workspace to be deterministic (CUDA docs, "Results reproducibility").
DETERMINISTIC_ENV = {"CUBLAS_WORKSPACE_CONFIG": ":4096:8"}


@dataclass
class Stage:
    """One subprocess of the check: ``group`` is what ``--skip`` names."""

    name: str
    group: str
    cmd: list[str]
    timeout_s: float
    env: dict[str, str] = field(default_factory=dict)
    clean: Path | None = None  # a folder this script owns, emptied before the stage runs


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line options; ``--help`` describes the whole check."""
    p = argparse.ArgumentParser(
        prog="gpu_check.sh",
        description=__doc__.split("\n\n")[0],
        epilog="Writes --out (json) and prints a table; exit 0 only when every stage passed.",
    )
    p.add_argument(
        "--out",
        type=Path,
        default=ROOT / "work" / "bench" / "gpu.json",
        help="the results json, written atomically at the end (default: work/bench/gpu.json)",
    )
    p.add_argument(
        "--work-dir",
        type=Path,
        default=ROOT / "work" / "gpu_check",
        help="scratch folder of the demo stages (default: work/gpu_check)",
    )
    p.add_argument(
        "--skip",
        action="append",
        default=[],
        choices=STAGE_GROUPS,
        help="leave out a group of stages (repeatable)",
    )
    p.add_argument("--batches", type=int, nargs="+", default=[2, 8], help="step-cost batch sizes")
    p.add_argument("--depth", type=int, default=50, help="ResNet depth of the step cost")
    p.add_argument("--size", type=int, default=800, help="image side of the step cost, px")
    p.add_argument("--reps", type=int, default=5, help="timed steps per side (after 2 warm-up)")
    p.add_argument("--budget-s", type=float, default=570.0, help="all stages together")
    p.add_argument("--dry-run", action="store_true", help="print the plan; run nothing")
    args = p.parse_args(argv)
    if any(b < 1 for b in args.batches) or args.reps < 1 or args.budget_s <= 0:
        p.error("--batches, --reps and --budget-s must be positive")
    return args


def _drcl(*args: str) -> list[str]:
    return [sys.executable, "-m", "drcl.cli.main", *args]


def demo_stages(work: Path) -> list[Stage]:
    """Demo dataset, pre-training and fine-tuning (the demo recipes) on the GPU, bf16, with
    automatic DataLoader workers and ``train.channels_last``."""
    data = work / "data"
    over = [
        f"data.train_ann={data / 'annotations' / 'train.json'}",
        f"data.train_images={data / 'train'}",
        f"data.val_ann={data / 'annotations' / 'val.json'}",
        f"data.val_images={data / 'val'}",
        "train.device=cuda",
        "train.amp=bf16",
        # the throughput switches (drcl.engine.runtime): workers for the machine (cores - 1, at
        # most 8) and NHWC convolutions, which tensor cores prefer
        "data.num_workers=-1",
        "train.channels_last=true",
    ]
    pre, fine = work / "pretrain", work / "finetune"
    return [
        Stage("demo data", "demo", _drcl("data", "make-demo", str(data)), 60, clean=work),
        Stage(
            "demo pretrain",
            "demo",
            _drcl("pretrain", "configs/pretrain/demo.yaml", "--work-dir", str(pre), *over),
            150,
        ),
        Stage(
            "demo finetune",
            "demo",
            _drcl(
                "finetune",
                "configs/finetune/demo.yaml",
                "--work-dir",
                str(fine),
                "--init",
                str(pre / "pretrained.safetensors"),
                *over,
            ),
            150,
        ),
    ]


def plan(args: argparse.Namespace) -> list[Stage]:
    """The stages to run, in order, without the skipped groups."""
    stages = [
        Stage(
            "pytest -m cuda",
            "tests",
            [sys.executable, "-m", "pytest", "-m", "cuda", "-q", "-rs", "-p", "no:cacheprovider"],
            180,
            env=DETERMINISTIC_ENV,
        )
    ]
    for b in args.batches:
        cmd = [sys.executable, str(ROOT / "bench" / "step_cost.py"), "--device", "cuda"]
        cmd += ["--amp", "bf16", "--depth", str(args.depth), "--size", str(args.size)]
        cmd += ["--batch", str(b), "--reps", str(args.reps)]
        stages.append(Stage(f"step cost b{b}", "bench", cmd, 120))
    stages += demo_stages(args.work_dir)
    return [s for s in stages if s.group not in args.skip]


def run_stage(stage: Stage, timeout_s: float) -> dict[str, Any]:
    """Run one stage; its status (pass / fail / timeout), wall time and parsed result."""
    if stage.clean is not None and stage.clean.exists():
        shutil.rmtree(stage.clean)
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), **stage.env}
    t0 = time.perf_counter()
    try:
        proc = subprocess.run(
            stage.cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout_s
        )
    except subprocess.TimeoutExpired as e:
        out = (e.stdout or b"").decode() if isinstance(e.stdout, bytes) else (e.stdout or "")
        return {"status": "timeout", "wall_s": time.perf_counter() - t0, "tail": out[-2000:]}
    return parse_output(proc.returncode, proc.stdout + proc.stderr, time.perf_counter() - t0)


def parse_output(rc: int, output: str, wall_s: float) -> dict[str, Any]:
    """Status from the exit code; the benchmark's json line and pytest's counts if present."""
    res: dict[str, Any] = {"status": "pass" if rc == 0 else "fail", "rc": rc, "wall_s": wall_s}
    marks = [ln for ln in output.splitlines() if ln.startswith(JSON_MARK)]
    if marks:
        res["result"] = json.loads(marks[-1][len(JSON_MARK) :])
    counts = dict(
        (word, int(n))
        for n, word in re.findall(r"(\d+) (passed|failed|skipped|errors?|deselected)", output)
    )
    if counts:
        res["pytest"] = counts
        if rc == 0 and counts.get("passed", 0) == 0:
            res["status"] = "fail"  # everything skipped: nothing was checked on this GPU
    if res["status"] != "pass":
        res["tail"] = output[-2000:]
    return res


def run_all(
    stages: list[Stage], budget_s: float, runner: Callable[[Stage, float], dict[str, Any]]
) -> dict[str, dict[str, Any]]:
    """Run the stages in order inside ``budget_s``; a stage past the budget is not started."""
    t0, results = time.perf_counter(), {}
    for stage in stages:
        left = budget_s - (time.perf_counter() - t0)
        if left < 10:
            results[stage.name] = {"status": "not run", "wall_s": 0.0, "tail": "budget spent"}
            continue
        print(f"[gpu_check] {stage.name} (limit {min(stage.timeout_s, left):.0f} s)", flush=True)
        results[stage.name] = runner(stage, min(stage.timeout_s, left))
    return results


def _detail(name: str, r: dict[str, Any]) -> str:
    """One short line: pytest counts, or the benchmark's key ratios."""
    if "pytest" in r:
        return ", ".join(f"{n} {k}" for k, n in r["pytest"].items())
    s = r.get("result")
    if not s or "pretrain_s" not in s:
        return r.get("tail", "").strip().splitlines()[-1][:80] if r.get("tail") else ""
    return (
        f"img/s {s['pretrain_images_per_s']:.1f} (ckpt {s['pretrain_ckpt_images_per_s']:.1f}) vs "
        f"det {s['detector_images_per_s']:.1f}; time x{s['pretrain_time_ratio']:.2f}; "
        f"peak {s['pretrain_peak_mib']:.0f}/{s['pretrain_ckpt_peak_mib']:.0f}/"
        f"{s['detector_peak_mib']:.0f} MiB = x{s['pretrain_memory_ratio']:.2f}"
        f"/x{s['pretrain_ckpt_memory_ratio']:.2f}"
    )


def format_table(results: dict[str, dict[str, Any]]) -> str:
    """Markdown table: stage, status, wall time, detail."""
    lines = ["| stage | status | wall s | detail |", "|---|---|---:|---|"]
    for name, r in results.items():
        lines.append(f"| {name} | {r['status']} | {r['wall_s']:.1f} | {_detail(name, r)} |")
    return "\n".join(lines)


def write_json(path: Path, payload: dict[str, Any]) -> None:
    """Write atomically: a reader never sees half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(payload, indent=1))
    os.replace(tmp, path)


def device_info() -> dict[str, str]:
    import torch

    return {
        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none",
        "torch": torch.__version__,
        "cuda": str(torch.version.cuda),
        "date": time.strftime("%Y-%m-%d %H:%M"),
    }


def main(
    argv: list[str] | None = None,
    runner: Callable[[Stage, float], dict[str, Any]] = run_stage,
    cuda_available: Callable[[], bool] | None = None,
) -> int:
    """Returns the exit code: 0 all passed, 1 a stage failed, 2 no CUDA device (nothing run)."""
    args = parse_args(argv)
    stages = plan(args)
    if args.dry_run:
        for s in stages:
            env = " ".join(f"{k}={v}" for k, v in s.env.items())
            print(f"{s.name} [{s.group}, <= {s.timeout_s:.0f} s]: {env} {' '.join(s.cmd)}".strip())
        return 0
    if cuda_available is None:
        import torch

        cuda_available = torch.cuda.is_available
    if not cuda_available():
        print("gpu_check: no CUDA device is visible; nothing was run or written", file=sys.stderr)
        return 2
    t0 = time.perf_counter()
    results = run_all(stages, args.budget_s, runner)
    payload = {
        "machine": device_info(),
        "minutes": (time.perf_counter() - t0) / 60,
        "stages": results,
    }
    write_json(args.out, payload)
    print(f"\n{format_table(results)}\n\n{payload['minutes']:.1f} min; details in {args.out}")
    return 0 if all(r["status"] == "pass" for r in results.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
