"""Throughput of the demo recipes against the machine's arithmetic limit, switches off vs on.

For one stage (``pretrain``: ``configs/pretrain/demo.yaml``; ``finetune``:
``configs/finetune/demo.yaml``), measured side by side, the two variants alternating:

- **model-only** images/s: the training step (forward, backward, optimizer step, and for
  pre-training the EMA update) on one fixed batch from the real data path, no loader;
- **model GFLOP/s**: FLOPs of one step counted by ``torch.utils.flop_counter`` (convolutions
  and matrix products, forward and backward) times model-only steps/s;
- **matmul GFLOP/s**: a 2048 x 2048 fp32 matmul in the same process, with the same threads;
- **end-to-end** images/s: ``images_per_s`` of ``cost.json`` of a real run of the recipe
  (``train.max_iters=N``, sampler, DataLoader, augmentation, logging, checkpoint), each run in
  its own process, variants alternating ``A, B, A, B``.

Variant ``off`` is the recipe with one DataLoader worker (:data:`SWITCHES_OFF`, as issue 25
measured it); ``on`` adds the switches (``--on``, default :data:`SWITCHES_ON`). The fractions
are ratios from one run; the seconds are context only.

Usage::

    python bench/throughput.py --stage pretrain --iters 16 --reps 2
    python bench/throughput.py --stage finetune --on "data.num_workers=-1 train.threads=-1"
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from common import ROOT, alternate, data_overrides, emit, python_cmd, run_json

RECIPES = {
    "pretrain": "configs/pretrain/demo.yaml",
    "finetune": "configs/finetune/demo.yaml",
}
# the switches measured against the recipe as it is (numerics unchanged: docs/performance.md)
SWITCHES_ON = ["data.num_workers=-1", "train.threads=-1"]
# The "off" variant is the recipe as issue 25 measured it: one DataLoader worker (the demo configs
# have used data.num_workers=-1 since, which would otherwise make "off" a switch-on run).
SWITCHES_OFF = ["data.num_workers=1"]
MATMUL_N = 2048


def load(stage: str, extra: list[str]):
    from drcl.config import load_config

    return load_config(str(ROOT / RECIPES[stage]), [*data_overrides(), *extra])


# ------------------------------------------------------------------------ model-only, one process
def build_step(stage: str, extra: list[str], work: Path):
    """(step closure, images per step, data CPU s per image) for a variant of the recipe."""
    import torch

    from drcl.engine import runtime
    from drcl.engine.distributed import DistInfo
    from drcl.engine.setup import apply_runtime

    cfg = load(stage, extra)
    info, device = DistInfo(), torch.device("cpu")
    torch.manual_seed(cfg.train.seed)
    if stage == "pretrain":
        from drcl.pretrain.loop import build_pretrain_data
        from drcl.pretrain.runner import build_drcl_model

        data = build_pretrain_data(cfg.data, cfg.train, cfg.pretrain, work, info)
        model = build_drcl_model(cfg)
    else:
        from drcl.finetune.job import FinetuneJob
        from drcl.finetune.runner import DetectorLoss, build_finetune_data, detector_for

        job = FinetuneJob.from_config(cfg, work, evaluate=False)
        data, index = build_finetune_data(job, info)
        freqs = torch.as_tensor(index.image_counts(), dtype=torch.float32)
        model = DetectorLoss(detector_for(job, index.num_classes, freqs))
    apply_runtime(cfg.train, model, data, device, info)
    threads = torch.get_num_threads()
    cpu_per_image = data_cost(data)
    batch = data.to_device(next(data.batches()), device)
    if cfg.train.channels_last:
        batch = runtime.batch_to_channels_last(batch)
    model.train()
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.SGD(params, lr=1e-4, momentum=0.9)  # tiny lr: a few steps, no divergence

    def step() -> None:
        if torch.get_num_threads() != threads:  # the variants may use different thread counts
            torch.set_num_threads(threads)
        losses = model(batch)
        opt.zero_grad(set_to_none=True)
        losses["loss"].backward()
        opt.step()
        if hasattr(model, "update_target"):
            model.update_target(0.5)

    return step, cfg.train.batch_size, cpu_per_image


def data_cost(data, samples: int = 16) -> float:
    """CPU seconds per image of the dataset (decode, boxes, augmentation; one thread, as a
    DataLoader worker runs), over the sampler's first ``samples`` draws."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    data.sampler.set_epoch(0)
    draws = [s for _, s in zip(range(samples), iter(data.sampler), strict=False)]
    data.dataset[draws[0]]  # warm caches (index, first decode)
    t0 = time.process_time()
    for s in draws:
        data.dataset[s]
    torch.set_num_threads(threads)
    return (time.process_time() - t0) / len(draws)


def count_flops(step) -> float:
    """FLOPs of one call of ``step`` (convolutions and matrix products, forward + backward)."""
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter:
        step()
    return float(counter.get_total_flops())


def matmul_fn(threads: int):
    import torch

    g = torch.Generator().manual_seed(0)
    a = torch.randn(MATMUL_N, MATMUL_N, generator=g)
    b = torch.randn(MATMUL_N, MATMUL_N, generator=g)

    def mm() -> None:
        if torch.get_num_threads() != threads:
            torch.set_num_threads(threads)
        torch.mm(a, b)

    return mm


def model_only(stage: str, on: list[str], reps: int) -> dict[str, Any]:
    """Model-only steps/s of both variants, FLOPs per step and the matmul rate, alternating."""
    import torch

    work = Path(tempfile.mkdtemp(prefix="throughput_"))
    default_threads = torch.get_num_threads()
    fns, images, threads, data_s = {}, {}, {}, {}
    for name, extra in (("off", SWITCHES_OFF), ("on", on)):
        torch.set_num_threads(default_threads)
        fns[name], images[name], data_s[name] = build_step(stage, extra, work / name)
        threads[name] = torch.get_num_threads()
    flops = count_flops(fns["off"])
    for name in ("off", "on"):
        fns[f"matmul_{name}"] = matmul_fn(threads[name])
    secs = alternate(fns, reps=reps, warmup=1)
    out: dict[str, Any] = {"flops_per_step": flops, "threads": threads}
    for name in ("off", "on"):
        mm_rate = 2 * MATMUL_N**3 / secs[f"matmul_{name}"]
        out[name] = {
            "step_s": secs[name],
            "images_per_s": images[name] / secs[name],
            "gflops": flops / secs[name] / 1e9,
            "matmul_gflops": mm_rate / 1e9,
            "fraction_of_matmul": flops / secs[name] / mm_rate,
            "data_cpu_s_per_image": data_s[name],
            # the data of a step in CPU seconds over the step's CPU seconds (threads x wall)
            "data_over_step_cpu": data_s[name] * images[name] / (secs[name] * threads[name]),
        }
    return out


# ------------------------------------------------------------------ end to end, one process each
def run_stage(stage: str, extra: list[str], work_dir: str) -> None:
    """Subprocess body: one real training run of the recipe; prints its cost.json."""
    cfg = load(stage, extra)
    if stage == "pretrain":
        from drcl.pretrain.job import PretrainJob
        from drcl.pretrain.runner import run_pretrain

        run_pretrain(PretrainJob.from_config(cfg, work_dir))
    else:
        from drcl.finetune.job import FinetuneJob
        from drcl.finetune.runner import train_detector

        train_detector(FinetuneJob.from_config(cfg, work_dir, evaluate=False))
    emit(json.loads((Path(work_dir) / "cost.json").read_text()))


def end_to_end(stage: str, on: list[str], iters: int, reps: int) -> dict[str, Any]:
    """End-to-end images/s of both variants, runs alternating off, on, off, on, ..."""
    runs: dict[str, list[float]] = {"off": [], "on": []}
    base = [f"train.max_iters={iters}", f"train.log_every={iters}", "train.checkpoint_every=0"]
    with tempfile.TemporaryDirectory(prefix="throughput_e2e_") as tmp:
        for rep in range(reps):
            for name, extra in (("off", SWITCHES_OFF), ("on", on)):
                work = os.path.join(tmp, f"{name}{rep}")
                cmd = python_cmd("throughput.py", "--run-stage", stage, work, *base, *extra)
                runs[name].append(float(run_json(cmd, timeout=1800)["images_per_s"]))
    return {name: {"images_per_s": statistics.median(v), "runs": v} for name, v in runs.items()}


def measure(stage: str, on: list[str], iters: int, reps: int, e2e_reps: int) -> dict[str, Any]:
    t0 = time.perf_counter()
    cmd = python_cmd("throughput.py", "--model-only", stage, "--reps", str(reps), *on)
    model = run_json(cmd, timeout=3600)
    e2e = end_to_end(stage, on, iters, e2e_reps)
    out: dict[str, Any] = {"stage": stage, "recipe": RECIPES[stage], "switches_on": on}
    out.update(iters=iters, flops_per_step=model["flops_per_step"], threads=model["threads"])
    for name in ("off", "on"):
        m, e = model[name], e2e[name]
        out[name] = {
            **m,
            "e2e_images_per_s": e["images_per_s"],
            "e2e_runs": e["runs"],
            "e2e_over_model": e["images_per_s"] / m["images_per_s"],
        }
    out["e2e_speedup"] = out["on"]["e2e_images_per_s"] / out["off"]["e2e_images_per_s"]
    out["model_speedup"] = out["on"]["images_per_s"] / out["off"]["images_per_s"]
    out["seconds"] = time.perf_counter() - t0
    return out


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--stage", choices=sorted(RECIPES), default="pretrain")
    p.add_argument("--on", default=" ".join(SWITCHES_ON), help="overrides of the 'on' variant")
    p.add_argument("--iters", type=int, default=16, help="iterations of each end-to-end run")
    p.add_argument("--reps", type=int, default=3, help="model-only timing repetitions")
    p.add_argument("--e2e-reps", type=int, default=2, help="end-to-end runs per variant")
    p.add_argument("--model-only", metavar="STAGE", help=argparse.SUPPRESS)
    p.add_argument("--run-stage", nargs=2, metavar=("STAGE", "WORK"), help=argparse.SUPPRESS)
    args, extra = p.parse_known_args(argv)
    if args.model_only:
        emit(model_only(args.model_only, extra, args.reps))
    elif args.run_stage:
        run_stage(args.run_stage[0], extra, args.run_stage[1])
    else:
        emit(measure(args.stage, args.on.split(), args.iters, args.reps, args.e2e_reps))


if __name__ == "__main__":
    sys.exit(main())
