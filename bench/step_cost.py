"""Pre-training step vs Faster R-CNN training step: time, phase profile, peak memory.

One 2DRCL step = forward of the four losses (two views, HCL + LCL + AR + SR), backward,
optimizer step and EMA update. One detector step = torchvision Faster R-CNN from
:func:`drcl.detection.model.build_detector` (same ResNet-FPN, same batch, same image size)
forward with targets, backward, optimizer step. Both use the same batch: the detector gets
view 1 (de-normalised to [0, 1]) and its valid boxes.

Usage::

    python bench/step_cost.py --depth 18 --size 320 --batch 2 --reps 3
    python bench/step_cost.py --depth 18 --size 320 --profile     # where the time goes
    python bench/step_cost.py --depth 18 --size 320 --rss pretrain  # peak RSS, own process
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
from common import WORK, alternate, bench_overrides, emit, peak_rss_mib

from drcl.config import load_config
from drcl.data.coco import CocoIndex
from drcl.detection.model import build_detector
from drcl.engine.distributed import DistInfo
from drcl.models.drcl import LEVELS
from drcl.pretrain.runner import build_drcl_model, build_pretrain_data

MEAN = torch.tensor([0.485, 0.456, 0.406])[:, None, None]
STD = torch.tensor([0.229, 0.224, 0.225])[:, None, None]
LR = 1e-3  # small: the benchmark times steps, it must not diverge over a few of them


SHARED = ["pretrain.sr.shared_pass=true"]  # one online pass over [masked view 1; view 2]


def make_config(depth: int, size: int, batch: int, extra: list[str] | None = None):
    return load_config(None, bench_overrides(depth, size, batch, extra))


def first_batch(cfg) -> dict[str, torch.Tensor]:
    """One pre-training batch from the real data path (DRB sampler, two views, masking)."""
    work = WORK / "step_cost"
    work.mkdir(parents=True, exist_ok=True)
    data = build_pretrain_data(cfg, work, DistInfo())
    return next(data.batches(0, 0.0))


def _sgd(model: torch.nn.Module) -> torch.optim.Optimizer:
    params = [p for p in model.parameters() if p.requires_grad]
    return torch.optim.SGD(params, lr=LR, momentum=0.9, weight_decay=1e-4)


def pretrain_step_fn(cfg, batch: dict[str, torch.Tensor]) -> Callable[[], float]:
    """A closure doing one full 2DRCL step; returns the loss."""
    torch.manual_seed(0)
    model = build_drcl_model(cfg).train()
    opt = _sgd(model)

    def step() -> float:
        losses = model(batch)
        opt.zero_grad(set_to_none=True)
        losses["loss"].backward()
        opt.step()
        model.update_target(0.5)
        return float(losses["loss"].detach())

    return step


def detector_inputs(batch: dict[str, torch.Tensor]) -> tuple[list, list]:
    """View 1 in [0, 1] and its valid boxes (unknown class 0 -> class 1) as detector targets."""
    images, targets = [], []
    for i in range(batch["view1"].shape[0]):
        valid = batch["box_valid"][i]
        images.append((batch["view1"][i] * STD + MEAN).clamp(0, 1))
        labels = batch["box_labels"][i][valid].clamp(min=1)
        targets.append({"boxes": batch["boxes1"][i][valid], "labels": labels})
    return images, targets


def detector_step_fn(cfg, batch: dict[str, torch.Tensor]) -> Callable[[], float]:
    """A closure doing one Faster R-CNN training step on the same images and boxes."""
    torch.manual_seed(0)
    num_classes = CocoIndex.from_file(cfg.data.train_ann).num_classes
    model = build_detector(cfg, num_classes).train()
    opt = _sgd(model)
    images, targets = detector_inputs(batch)

    def step() -> float:
        losses = model(images, targets)
        loss = sum(losses.values())
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
        b = batch["view1"].shape[0]
        views = torch.cat([batch["view1"], batch["view2"]])
        with _timed(t, "online encoder [v1;v2] fwd"):
            c5_on, fpn_on = model.online.encode(views, with_fpn=True)
        with _timed(t, "target encoder [v1;v2] fwd (no grad)"), torch.no_grad():
            c5_tg, fpn_tg = model.target.encode(views, with_fpn=True)
        with _timed(t, "online encoder masked v1 fwd"):
            fpn_m = model.online.encode(batch["masked_view1"], with_fpn=True)[1]
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
    cfg = make_config(depth, size, batch, SHARED if which == "pretrain_shared" else None)
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
    p.add_argument(
        "--rss", choices=("pretrain", "pretrain_shared", "detector"), help="peak RSS of one side"
    )
    p.add_argument("--threads", type=int, default=0, help="torch threads (0 = default)")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.rss:
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
