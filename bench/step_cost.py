"""Pre-training step vs Faster R-CNN training step: time, phase profile, peak memory.

One 2DRCL step = forward of the four losses (two views, HCL + LCL + AR + SR), backward,
optimizer step and EMA update. One detector step = torchvision Faster R-CNN from
:func:`drcl.detection.model.build_detector` (same ResNet-FPN, same batch, same image size)
forward with targets, backward, optimizer step. Both use the same batch: the detector gets
view 1 (de-normalised to [0, 1]) and its valid boxes.

Modes (each prints one JSON line):

- default: pre-training step (with and without ``sr.shared_pass``) vs the detector step;
- ``--overhead``: the pre-training step / the sum of its mandatory encoder passes (online
  ``[view1; view2]`` forward + backward, target ``[view1; view2]`` forward, online masked view 1
  forward + backward), all timed in the same run;
- ``--checkpointing``: step time with ``pretrain.checkpointing`` on vs off;
- ``--rss WHICH``: peak RSS of one side in its own process;
- ``--device cuda [--amp bf16]``: the comparison on a GPU, timers synchronised, images/s and
  peak ``torch.cuda.max_memory_allocated`` of each side (one side at a time, same process).

Usage::

    python bench/step_cost.py --depth 18 --size 320 --batch 2 --reps 3
    python bench/step_cost.py --depth 18 --size 320 --overhead
    python bench/step_cost.py --depth 50 --size 640 --batch 1 --checkpointing
    python bench/step_cost.py --depth 18 --size 320 --profile     # where the time goes
    python bench/step_cost.py --depth 18 --size 320 --rss pretrain  # peak RSS, own process
    python bench/step_cost.py --depth 50 --size 800 --batch 8 --device cuda --amp bf16
"""

from __future__ import annotations

import argparse
import contextlib
import time
from collections.abc import Callable
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
from common import WORK, alternate, bench_overrides, emit, peak_rss_mib

from drcl.config import load_config
from drcl.data.coco import CocoIndex
from drcl.engine.distributed import DistInfo
from drcl.finetune.runner import detector_for
from drcl.models.drcl import LEVELS
from drcl.pretrain.loop import build_pretrain_data
from drcl.pretrain.runner import build_drcl_model

MEAN = torch.tensor([0.485, 0.456, 0.406])[:, None, None]
STD = torch.tensor([0.229, 0.224, 0.225])[:, None, None]
LR = 1e-3  # small: the benchmark times steps, it must not diverge over a few of them


SHARED = ["pretrain.sr.shared_pass=true"]  # one online pass over [masked view 1; view 2]
CKPT = ["pretrain.checkpointing=true"]  # recompute the online ResNet stages in backward
RSS_VARIANTS = {
    "pretrain": None,
    "pretrain_shared": SHARED,
    "pretrain_ckpt": CKPT,
    "pretrain_ckpt_shared": CKPT + SHARED,
    "detector": None,
}


def make_config(depth: int, size: int, batch: int, extra: list[str] | None = None):
    return load_config(None, bench_overrides(depth, size, batch, extra))


def first_batch(cfg) -> dict[str, torch.Tensor]:
    """One pre-training batch from the real data path (DRB sampler, two views, masking)."""
    work = WORK / "step_cost"
    work.mkdir(parents=True, exist_ok=True)
    data = build_pretrain_data(cfg.data, cfg.train, cfg.pretrain, work, DistInfo())
    return next(data.batches())


def _sgd(model: torch.nn.Module) -> torch.optim.Optimizer:
    params = [p for p in model.parameters() if p.requires_grad]
    return torch.optim.SGD(params, lr=LR, momentum=0.9, weight_decay=1e-4)


def _autocast(device: torch.device, amp: str):
    """bf16 autocast on CUDA (no loss scaling needed); a no-op otherwise (CPU runs fp32)."""
    if amp == "none" or device.type != "cuda":
        return contextlib.nullcontext()
    return torch.autocast("cuda", dtype=torch.bfloat16)


def pretrain_step_fn(
    cfg, batch: dict[str, torch.Tensor], device: str = "cpu", amp: str = "none"
) -> Callable[[], float]:
    """A closure doing one full 2DRCL step; returns the loss."""
    torch.manual_seed(0)
    dev = torch.device(device)
    model = build_drcl_model(cfg).to(dev).train()
    batch = batch.to(dev)
    opt = _sgd(model)

    def step() -> float:
        with _autocast(dev, amp):
            losses = model(batch)
        opt.zero_grad(set_to_none=True)
        losses["loss"].backward()
        opt.step()
        model.update_target(0.5)
        return float(losses["loss"].detach())

    return step


def _surrogate(c5: torch.Tensor | None, fpn: dict[str, torch.Tensor] | None) -> torch.Tensor:
    """A scalar reading every output of an encoder pass, so backward covers the whole pass."""
    outs = ([c5] if c5 is not None else []) + list((fpn or {}).values())
    return sum(o.float().mean() for o in outs)


def encoder_passes_fn(cfg, batch: dict[str, torch.Tensor]) -> Callable[[], None]:
    """A closure running only the mandatory encoder passes of one 2DRCL step (default config:
    online ``[v1; v2]`` fwd + bwd, target ``[v1; v2]`` fwd without grad, online masked view 1
    fwd + bwd; with ``sr.shared_pass`` the online pass is ``[masked v1; v2]`` and there is no
    third pass), on a model of its own built like the step's."""
    torch.manual_seed(0)
    model = build_drcl_model(cfg).train()
    shared = bool(cfg.pretrain.sr.shared_pass)
    views = torch.cat([batch.view1, batch.view2])
    online_in = torch.cat([batch.masked_view1, batch.view2]) if shared else views

    def passes() -> None:
        model.zero_grad(set_to_none=True)
        _surrogate(*model.online.encode(online_in, with_fpn=True)).backward()
        with torch.no_grad():
            model.target.encode(views, with_fpn=True)
        if not shared:
            fpn = model.online.encode(batch.masked_view1, with_fpn=True)[1]
            _surrogate(None, fpn).backward()

    return passes


def detector_inputs(batch: dict[str, torch.Tensor]) -> tuple[list, list]:
    """View 1 in [0, 1] and its valid boxes (unknown class 0 -> class 1) as detector targets."""
    images, targets = [], []
    for i in range(batch.view1.shape[0]):
        valid = batch.box_valid[i]
        images.append((batch.view1[i] * STD + MEAN).clamp(0, 1))
        labels = batch.box_labels[i][valid].clamp(min=1)
        targets.append({"boxes": batch.boxes1[i][valid], "labels": labels})
    return images, targets


def detector_step_fn(
    cfg, batch: dict[str, torch.Tensor], device: str = "cpu", amp: str = "none"
) -> Callable[[], float]:
    """A closure doing one Faster R-CNN training step on the same images and boxes."""
    torch.manual_seed(0)
    dev = torch.device(device)
    num_classes = CocoIndex.from_file(cfg.data.train_ann).num_classes
    model = detector_for(cfg, num_classes).to(dev).train()
    opt = _sgd(model)
    images, targets = detector_inputs(batch)
    images = [im.to(dev) for im in images]
    targets = [{k: v.to(dev) for k, v in t.items()} for t in targets]

    def step() -> float:
        with _autocast(dev, amp):
            losses = model(images, targets)
        loss = sum(v.float() for v in losses.values())
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        return float(loss.detach())

    return step


def compare(depth: int, size: int, batch: int, reps: int) -> dict[str, Any]:
    """Median seconds per step of both, alternating; ratio = pretrain / detector."""
    cfg = make_config(depth, size, batch)
    data = first_batch(cfg)
    shared = make_config(depth, size, batch, SHARED)
    times = alternate(
        {
            "pretrain": pretrain_step_fn(cfg, data),
            "pretrain_shared": pretrain_step_fn(shared, data),
            "detector": detector_step_fn(cfg, data),
        },
        reps=reps,
    )
    return {
        "depth": depth,
        "size": size,
        "batch": batch,
        "reps": reps,
        "pretrain_s": times["pretrain"],
        "detector_s": times["detector"],
        "ratio": times["pretrain"] / times["detector"],
        "pretrain_shared_s": times["pretrain_shared"],
        "ratio_shared": times["pretrain_shared"] / times["detector"],
        "pretrain_images_per_s": batch / times["pretrain"],
    }


CLOCKS = {"wall": time.perf_counter, "cpu": time.process_time}


def overhead(depth: int, size: int, batch: int, reps: int, clock: str = "wall") -> dict[str, Any]:
    """Step / sum of its mandatory encoder passes, both timed alternately in this run."""
    cfg = make_config(depth, size, batch)
    data = first_batch(cfg)
    times = alternate(
        {"step": pretrain_step_fn(cfg, data), "passes": encoder_passes_fn(cfg, data)},
        reps=reps,
        clock=CLOCKS[clock],
    )
    return {
        "depth": depth,
        "size": size,
        "batch": batch,
        "reps": reps,
        "step_s": times["step"],
        "passes_s": times["passes"],
        "overhead": times["step"] / times["passes"],
        "clock": clock,
    }


def checkpointing_cost(
    depth: int, size: int, batch: int, reps: int, clock: str = "wall"
) -> dict[str, Any]:
    """Step time with ``pretrain.checkpointing`` on vs off, alternating in this run."""
    cfg = make_config(depth, size, batch)
    data = first_batch(cfg)
    times = alternate(
        {
            "off": pretrain_step_fn(cfg, data),
            "on": pretrain_step_fn(make_config(depth, size, batch, CKPT), data),
        },
        reps=reps,
        clock=CLOCKS[clock],
    )
    return {
        "depth": depth,
        "size": size,
        "batch": batch,
        "reps": reps,
        "off_s": times["off"],
        "on_s": times["on"],
        "time_ratio": times["on"] / times["off"],
        "clock": clock,
    }


# ---------------------------------------------------------------------------------------- CUDA
def cuda_side(make_step: Callable[[], Callable[[], float]], reps: int) -> dict[str, float]:
    """Build one side on the GPU, warm up, time ``reps`` synchronised steps; peak memory.

    Sides run one after the other (the other side's model freed), so each peak
    ``max_memory_allocated`` holds one model, its optimizer state and its step's activations.
    """
    import gc

    gc.collect()
    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats()
    step = make_step()
    times = alternate({"step": step}, reps=reps, warmup=2, sync=torch.cuda.synchronize)
    peak = torch.cuda.max_memory_allocated() / 2**20
    del step
    return {"s": times["step"], "peak_mib": peak}


def compare_cuda(depth: int, size: int, batch: int, reps: int, amp: str) -> dict[str, Any]:
    """2DRCL pre-training vs Faster R-CNN on CUDA: images/s and peak memory, one run."""
    if not torch.cuda.is_available():
        raise SystemExit("step_cost.py --device cuda: no CUDA device is visible")
    cfg = make_config(depth, size, batch)
    data = first_batch(cfg)
    sides = {
        "pretrain": lambda: pretrain_step_fn(cfg, data, "cuda", amp),
        "pretrain_ckpt": lambda: pretrain_step_fn(
            make_config(depth, size, batch, CKPT), data, "cuda", amp
        ),
        "detector": lambda: detector_step_fn(cfg, data, "cuda", amp),
    }
    res: dict[str, Any] = {"depth": depth, "size": size, "batch": batch, "reps": reps, "amp": amp}
    for name, make in sides.items():
        r = cuda_side(make, reps)
        res[f"{name}_s"], res[f"{name}_peak_mib"] = r["s"], r["peak_mib"]
        res[f"{name}_images_per_s"] = batch / r["s"]
    for name in ("pretrain", "pretrain_ckpt"):
        res[f"{name}_time_ratio"] = res[f"{name}_s"] / res["detector_s"]
        res[f"{name}_memory_ratio"] = res[f"{name}_peak_mib"] / res["detector_peak_mib"]
    res["device_name"] = torch.cuda.get_device_name(0)
    return res


# ------------------------------------------------------------------------------------ profile
@contextmanager
def _timed(out: dict[str, float], name: str):
    t0 = time.perf_counter()
    yield
    out[name] = out.get(name, 0.0) + time.perf_counter() - t0


def phase_breakdown(cfg, batch: dict[str, torch.Tensor], reps: int = 2) -> dict[str, float]:
    """Seconds per phase of a 2DRCL step (median-free mean over ``reps`` after one warm-up).

    Replays :meth:`DRCLModel.forward` phase by phase (same calls, same order) so each encoder
    pass, the heads, backward, optimizer and EMA are timed separately.
    """
    torch.manual_seed(0)
    model = build_drcl_model(cfg).train()
    opt = _sgd(model)
    out: dict[str, float] = {}
    for rep in range(reps + 1):
        t = out if rep else {}
        b = batch.view1.shape[0]
        views = torch.cat([batch.view1, batch.view2])
        with _timed(t, "online encoder [v1;v2] fwd"):
            c5_on, fpn_on = model.online.encode(views, with_fpn=True)
        with _timed(t, "target encoder [v1;v2] fwd (no grad)"), torch.no_grad():
            c5_tg, fpn_tg = model.target.encode(views, with_fpn=True)
        with _timed(t, "online encoder masked v1 fwd"):
            fpn_m = model.online.encode(batch.masked_view1, with_fpn=True)[1]
        with _timed(t, "HCL head+loss"):
            loss = model._hcl_loss(c5_on, c5_tg)
        with _timed(t, "LCL RoIAlign+box head+loss"):
            loss = loss + model._lcl_loss(fpn_on, fpn_tg, batch)
        with _timed(t, "AR decoder+loss"):
            loss = loss + model._ar_loss(fpn_m, batch)
        with _timed(t, "SR predictor+loss"):
            loss = loss + model._sr_loss(fpn_m, {k: fpn_tg[k][:b] for k in LEVELS}, batch)
        with _timed(t, "backward"):
            opt.zero_grad(set_to_none=True)
            loss.backward()
        with _timed(t, "optimizer step"):
            opt.step()
        with _timed(t, "EMA update"):
            model.update_target(0.5)
    return {k: v / reps for k, v in out.items()}


def op_profile(step: Callable[[], float], top: int = 12) -> list[dict[str, Any]]:
    """torch.profiler over one step (after a warm-up): top operators by self CPU time."""
    from torch.profiler import ProfilerActivity, profile

    step()
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        step()
    events = sorted(prof.key_averages(), key=lambda e: e.self_cpu_time_total, reverse=True)
    total = sum(e.self_cpu_time_total for e in events) or 1.0
    return [
        {
            "op": e.key,
            "self_ms": e.self_cpu_time_total / 1e3,
            "share": e.self_cpu_time_total / total,
            "calls": e.count,
        }
        for e in events[:top]
    ]


def rss_run(which: str, depth: int, size: int, batch: int) -> dict[str, Any]:
    """Peak RSS of this process after building ``which`` and doing two steps."""
    cfg = make_config(depth, size, batch, RSS_VARIANTS[which])
    data = first_batch(cfg)
    before = peak_rss_mib()
    step = (detector_step_fn if which == "detector" else pretrain_step_fn)(cfg, data)
    for _ in range(2):
        step()
    return {"which": which, "peak_rss_mib": peak_rss_mib(), "rss_before_model_mib": before}


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--depth", type=int, default=18)
    p.add_argument("--size", type=int, default=320)
    p.add_argument("--batch", type=int, default=2)
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--profile", action="store_true", help="phase breakdown + top operators")
    p.add_argument("--rss", choices=tuple(RSS_VARIANTS), help="peak RSS of one side")
    p.add_argument("--overhead", action="store_true", help="step / its mandatory encoder passes")
    p.add_argument("--checkpointing", action="store_true", help="step time, checkpointing on/off")
    p.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    p.add_argument("--amp", choices=("none", "bf16"), default="none", help="CUDA only")
    p.add_argument("--threads", type=int, default=0, help="torch threads (0 = default)")
    p.add_argument(
        "--clock",
        choices=tuple(CLOCKS),
        default="wall",
        help="--overhead/--checkpointing: wall seconds, or CPU seconds of this process (with "
        "--threads 1: the work done, robust to other jobs on a shared CPU)",
    )
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.device == "cuda":
        emit(compare_cuda(args.depth, args.size, args.batch, args.reps, args.amp))
    elif args.overhead:
        emit(overhead(args.depth, args.size, args.batch, args.reps, args.clock))
    elif args.checkpointing:
        emit(checkpointing_cost(args.depth, args.size, args.batch, args.reps, args.clock))
    elif args.rss:
        emit(rss_run(args.rss, args.depth, args.size, args.batch))
    elif args.profile:
        cfg = make_config(args.depth, args.size, args.batch)
        batch = first_batch(cfg)
        emit(
            {
                "phases": phase_breakdown(cfg, batch),
                "pretrain_ops": op_profile(pretrain_step_fn(cfg, batch)),
                "detector_ops": op_profile(detector_step_fn(cfg, batch)),
            }
        )
    else:
        emit(compare(args.depth, args.size, args.batch, args.reps))


if __name__ == "__main__":
    Path(WORK).mkdir(parents=True, exist_ok=True)
    main()
