"""``make bench``: every benchmark of the performance issue, one table of ratios at the end.

Each benchmark runs in its own subprocess (fresh memory, its own thread settings) and prints a
JSON result; this script turns them into rows ``(target, measured, goal, pass/fail)``, prints
the table and writes ``work/bench/results.json`` and ``work/bench/results.md``.

Usage::

    python bench/run_all.py               # CPU default, ~25 minutes on 2 idle cores
    python bench/run_all.py --full-lvis   # evaluation at LVIS val size (5,000 images)
    python bench/run_all.py --quick       # smoke run: smallest settings, 1 repetition
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

from common import WORK, demo_data, machine_info, python_cmd, run_json


def _row(target: str, measured: float, goal: str, ok: bool | None, note: str = "") -> dict:
    return {"target": target, "measured": measured, "goal": goal, "ok": ok, "note": note}


def step_rows(settings: list[tuple[int, int]], batch: int, reps: int, res: dict) -> list[dict]:
    """Step time vs the detector, for context: a two-view method pushes more encoder passes than
    the detector, so ``<= 1.0`` is out of reach once the backbone dominates (rows 1c replace it)."""
    rows = []
    for depth, size in settings:
        r = run_json(python_cmd("step_cost.py", *_args(depth, size, batch), "--reps", str(reps)))
        res[f"step_r{depth}_{size}"] = r
        note = f"{r['pretrain_s']:.2f} s vs {r['detector_s']:.2f} s per step"
        rows.append(
            _row(
                f"1. step time pretrain / Faster R-CNN, R{depth} {size}px b{batch}",
                r["ratio"],
                "report",
                None,
                note,
            )
        )
        shared = f"{r['pretrain_shared_s']:.2f} s vs {r['detector_s']:.2f} s per step"
        rows.append(
            _row(
                f"1b. same with sr.shared_pass=true, R{depth} {size}px b{batch}",
                r["ratio_shared"],
                "report",
                None,
                shared,
            )
        )
    return rows


def overhead_rows(
    settings: list[tuple[int, int]], batch: int, reps: int, res: dict, clock: str = "wall"
) -> list[dict]:
    """Pre-training step / the sum of its mandatory encoder passes, timed in the same run."""
    rows = []
    for depth, size in settings:
        cmd = python_cmd("step_cost.py", *_args(depth, size, batch), "--reps", str(reps))
        cmd += ["--clock", clock]
        r = run_json([*cmd, "--overhead"])
        res[f"overhead_r{depth}_{size}"] = r
        rows.append(
            _row(
                f"1c. step / its encoder passes, R{depth} {size}px b{batch}",
                r["overhead"],
                "<= 1.10",
                r["overhead"] <= 1.10,
                f"{r['step_s']:.2f} s vs {r['passes_s']:.2f} s",
            )
        )
    return rows


def checkpointing_rows(
    depth: int, size: int, batch: int, reps: int, res: dict, clock: str = "wall"
) -> list[dict]:
    """Step time with pretrain.checkpointing on / off, alternating in one run."""
    cmd = python_cmd("step_cost.py", *_args(depth, size, batch), "--reps", str(reps))
    cmd += ["--clock", clock]
    r = run_json([*cmd, "--checkpointing"])
    res[f"checkpointing_r{depth}_{size}"] = r
    return [
        _row(
            f"5c. step time checkpointing on / off, R{depth} {size}px b{batch}",
            r["time_ratio"],
            "<= 1.35",
            r["time_ratio"] <= 1.35,
            f"{r['on_s']:.2f} s vs {r['off_s']:.2f} s",
        )
    ]


def _args(depth: int, size: int, batch: int) -> list[str]:
    return ["--depth", str(depth), "--size", str(size), "--batch", str(batch)]


def data_rows(sizes: list[int], images: int, res: dict) -> list[dict]:
    rows = []
    for size in sizes:
        r = run_json(python_cmd("data_pipeline.py", "--size", str(size), "--images", str(images)))
        res[f"data_{size}"] = r
        # the most demanding consumer measured at this size: the fastest pre-training step
        steps = [v for k, v in res.items() if k.startswith("step_") and v["size"] == size]
        need = max(v["pretrain_images_per_s"] for v in steps)
        ratio = r["images_per_s"] / need
        note = f"{r['images_per_s']:.1f} img/s per worker vs step {need:.2f} img/s"
        rows.append(_row(f"2. data / step images/s, {size}px", ratio, ">= 3", ratio >= 3, note))
    return rows


def lvis_rows(images: int, reps: int, res: dict) -> list[dict]:
    r = run_json(
        python_cmd("lvis_compare.py", "--images", str(images), "--reps", str(reps)), timeout=7200
    )
    res["lvis"] = r
    case = f"{r['images']} img x {r['classes']} cls x {r['dets_per_image']} dets"
    return [
        _row(
            f"3. eval metrics max abs(ours - LVIS API), {case}",
            r["max_abs_diff"],
            "<= 1e-9",
            r["max_abs_diff"] <= 1e-9,
        ),
        _row(
            "3. eval speed LVIS API / ours",
            r["speedup"],
            ">= 5",
            r["speedup"] >= 5,
            f"{r['ours_s']:.1f} s vs {r['lvis_s']:.1f} s (median of {r['reps']})",
        ),
        _row(
            "3. eval peak RSS ours / LVIS API",
            r["ours_rss_mib"] / r["lvis_rss_mib"],
            "report",
            None,
            f"{r['ours_rss_mib']:.0f} MiB vs {r['lvis_rss_mib']:.0f} MiB",
        ),
    ]


def throughput_rows(
    stages: list[str], iters: int, reps: int, e2e_reps: int, res: dict
) -> list[dict]:
    """Rows 8: the demo recipes against the machine's arithmetic limit, switches off vs on
    (``bench/throughput.py``): model-only timings ``reps`` rounds, ``e2e_reps`` runs each."""
    rows = []
    for stage in stages:
        cmd = python_cmd("throughput.py", "--stage", stage, "--iters", str(iters))
        r = run_json([*cmd, "--reps", str(reps), "--e2e-reps", str(e2e_reps)], timeout=3600)
        res[f"throughput_{stage}"] = r
        off, on = r["off"], r["on"]
        tag = f"8. {stage} demo recipe"
        rows += [
            _row(
                f"{tag}: end-to-end / model-only images/s, switches on",
                on["e2e_over_model"],
                "report",
                None,
                f"{on['e2e_images_per_s']:.2f} vs {on['images_per_s']:.2f} img/s; "
                f"off: {off['e2e_over_model']:.2f}; data "
                f"{1000 * on.get('data_cpu_s_per_image', float('nan')):.1f} ms CPU/img",
            ),
            _row(
                f"{tag}: model GFLOP/s / 2048^2 fp32 matmul GFLOP/s, switches on",
                on["fraction_of_matmul"],
                "report",
                None,
                f"{on['gflops']:.3g} vs {on['matmul_gflops']:.3g} GFLOP/s "
                f"({r['flops_per_step'] / 1e9:.1f} GFLOP/step); "
                f"off: {off['fraction_of_matmul']:.2f}",
            ),
            _row(
                f"{tag}: end-to-end images/s, switches on / off",
                r["e2e_speedup"],
                ">= 1.3",
                r["e2e_speedup"] >= 1.3,
                f"{on['e2e_images_per_s']:.2f} vs {off['e2e_images_per_s']:.2f} img/s "
                f"({' '.join(r['switches_on'])}); model-only {r['model_speedup']:.2f}x",
            ),
        ]
    return rows


def sampler_rows(reps: int, res: dict) -> list[dict]:
    r = run_json(python_cmd("sampler.py", "--reps", str(reps)))
    res["sampler"] = r
    note = f"{r['epoch_len']} indices; factors once: {r['factors_s']:.2f} s"
    return [
        _row(
            "4. DRB epoch indices, 100k img x 1203 cls (s)",
            r["epoch_s"],
            "< 0.5",
            r["epoch_s"] < 0.5,
            note,
        )
    ]


MEMORY_VARIANTS = (
    ("pretrain", "5."),
    ("pretrain_shared", "5b. shared_pass,"),
    ("pretrain_ckpt", "5c. checkpointing,"),
    ("pretrain_ckpt_shared", "5d. checkpointing + shared_pass,"),
)


def memory_rows(settings: list[tuple[int, int]], batch: int, res: dict) -> list[dict]:
    rows = []
    for depth, size in settings:
        rss = {
            which: run_json(python_cmd("step_cost.py", *_args(depth, size, batch), "--rss", which))
            for which in ("detector", *(w for w, _ in MEMORY_VARIANTS))
        }
        res[f"rss_r{depth}_{size}"] = rss
        b = rss["detector"]["peak_rss_mib"]
        for which, label in MEMORY_VARIANTS:
            a = rss[which]["peak_rss_mib"]
            rows.append(
                _row(
                    f"{label} peak RSS pretrain / Faster R-CNN, R{depth} {size}px b{batch}",
                    a / b,
                    "<= 1.3",
                    a / b <= 1.3,
                    f"{a:.0f} MiB vs {b:.0f} MiB",
                )
            )
    return rows


def ddp_rows(steps: int, res: dict) -> list[dict]:
    r = run_json(python_cmd("ddp_scaling.py", "--steps", str(steps)))
    res["ddp"] = r
    note = f"{r['samples_per_s_1']:.2f} vs {r['samples_per_s_2']:.2f} samples/s (tiny R18)"
    return [
        _row("6. DDP gloo 2 proc / 1 proc samples/s", r["speedup"], "report (ideal 2)", None, note)
    ]


def gpu_rows(path: Path) -> list[dict]:
    """The GPU figures of the last ``bench/gpu_check.sh`` run (``work/bench/gpu.json``), if any."""
    if not path.is_file():
        note = "no GPU run yet: bench/gpu_check.sh"
        return [_row("7. GPU (CUDA tests, step cost, demo)", None, "-", None, note)]
    data = json.loads(path.read_text())
    rows = []
    for name, r in data["stages"].items():
        s = r.get("result") or {}
        if "pretrain_memory_ratio" in s:
            where = (
                f"R{s['depth']} {s['size']}px b{s['batch']} {s['amp']}, {data['machine']['gpu']}"
            )
            for key, label, goal in (
                ("pretrain_ckpt_memory_ratio", "peak memory, checkpointing", 1.3),
                ("pretrain_memory_ratio", "peak memory", None),
                ("pretrain_time_ratio", "step time", None),
            ):
                ok = None if goal is None else s[key] <= goal
                rows.append(
                    _row(
                        f"7. GPU {label} pretrain / Faster R-CNN, {where}",
                        s[key],
                        "report" if goal is None else f"<= {goal}",
                        ok,
                    )
                )
        else:
            rows.append(
                _row(
                    f"7. GPU {name} ({r['wall_s']:.0f} s)",
                    None,
                    "pass",
                    r["status"] == "pass",
                    r["status"],
                )
            )
    return rows


def format_table(rows: list[dict]) -> str:
    lines = [
        "| target | measured | goal | result | detail |",
        "|---|---:|---|---|---|",
    ]
    for r in rows:
        ok = "n/a" if r["ok"] is None else ("pass" if r["ok"] else "FAIL")
        ok = "not measured" if r["measured"] is None and r["ok"] is None else ok
        m = r["measured"]
        if m is None:
            value = "-"
        else:
            value = f"{m:.2e}" if abs(m) < 1e-3 and m != 0 else f"{m:.3g}"
        lines.append(f"| {r['target']} | {value} | {r['goal']} | {ok} | {r['note']} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="smoke run: smallest settings")
    p.add_argument("--full-lvis", action="store_true", help="evaluation at 5,000 images")
    p.add_argument("--batch", type=int, default=2)
    p.add_argument("--reps", type=int, default=3, help="step timing repetitions")
    p.add_argument(
        "--only",
        default="",
        help="comma-separated groups to run (step,overhead,data,lvis,sampler,memory,"
        "checkpointing,ddp,throughput); default: all",
    )
    p.add_argument(
        "--clock",
        choices=("wall", "cpu"),
        default="wall",
        help="rows 1c/5c: wall seconds, or CPU seconds per process (for a busy shared CPU)",
    )
    args = p.parse_args(argv)
    t0 = time.perf_counter()
    demo_data()  # generate once, before anything is timed
    q = args.quick
    steps = [(18, 320)] if q else [(18, 320), (18, 640), (50, 320), (50, 640)]
    res: dict[str, Any] = {"machine": machine_info()}
    reps = 1 if q else args.reps
    ckpt_at = (18, 320) if q else (50, 640)
    groups = {
        "step": lambda: step_rows(steps, args.batch, reps, res),
        "overhead": lambda: overhead_rows(steps, args.batch, reps, res, args.clock),
        "data": lambda: data_rows([320] if q else [320, 640], 16 if q else 48, res),
        "lvis": lambda: lvis_rows(5000 if args.full_lvis else (100 if q else 1000), 1, res),
        "sampler": lambda: sampler_rows(2 if q else 7, res),
        "memory": lambda: memory_rows(
            [(18, 320)] if q else [(18, 320), (50, 640)], args.batch, res
        ),
        "checkpointing": lambda: checkpointing_rows(*ckpt_at, 1, 1 if q else 2, res, args.clock),
        "ddp": lambda: ddp_rows(2 if q else 6, res),
        "throughput": lambda: throughput_rows(
            ["pretrain", "finetune"], 4 if q else 16, reps, 1 if q else 2, res
        ),
    }
    only = [g for g in args.only.split(",") if g]
    unknown = sorted(set(only) - set(groups))
    if unknown:
        p.error(f"--only: unknown group(s) {', '.join(unknown)}; allowed: {', '.join(groups)}")
    if "data" in only and "step" not in only:
        p.error("--only data needs step too (its ratio divides by the step's images/s)")
    rows: list[dict] = []
    for name, run in groups.items():
        if not only or name in only:
            rows += run()
    rows += gpu_rows(WORK / "gpu.json")
    res["rows"], res["minutes"] = rows, (time.perf_counter() - t0) / 60
    table = format_table(rows)
    header = " | ".join(f"{k}: {v}" for k, v in res["machine"].items())
    WORK.mkdir(parents=True, exist_ok=True)
    Path(WORK / "results.json").write_text(json.dumps(res, indent=1))
    Path(WORK / "results.md").write_text(f"{header}\n\n{table}\n")
    print(
        f"\n{header}\n\n{table}\n\ntotal {res['minutes']:.1f} min; details in {WORK}/results.json"
    )


if __name__ == "__main__":
    main()
