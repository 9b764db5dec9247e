"""The fine-tuning length curve: AP on the tune split against fine-tuning iterations (issue 20).

One fine-tuning run of the grid's recipe, from the baseline row's init (the generic backbone), as
long as the longest point of ``curve.iters``; it keeps a checkpoint at every point, and each one
is evaluated on the tune split afterwards. One run with checkpoints costs the longest run plus
one evaluation per point, against the sum of all lengths for separate runs. Layout::

    WORK_DIR/curve/finetune/        the run (ckpt_*.pt at every point)
    WORK_DIR/curve/eval/ITER/       metrics_bbox.json of the checkpoint at ITER on the tune split
    WORK_DIR/curve/metrics.jsonl    one line per point: {"iter", "AP", "AP50", "APr", "APc", "APf"}
    WORK_DIR/curve/curve.json       the points, the picked length (and without the cap), how
                                    far from flat it is

Caveat, stated in ``curve.json``: the lr schedule is the longest run's, so a point before its
first lr decay is read at the full lr. It underestimates what a run of that length (decayed at
its own end) reaches, so the curve flattens later than the converged AP does: the picked
length errs long. Resumable: finished evaluations are kept, the run resumes from its checkpoint.

    python -m drcl.ablation.curve configs/ablate/v2_grid.yaml --work-dir work/v2_grid
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from drcl.ablation.results import METRICS, _percent
from drcl.config import Config, ConfigError
from drcl.utils.io import atomic_write_json, atomic_write_text

log = logging.getLogger(__name__)


@dataclass
class CurveConfig:
    """The ``curve`` section of an ablation file."""

    iters: list[int] = field(default_factory=list)  # evaluation points; the run is max(iters) long
    eval_ann: str | None = None  # the tune split (never the reported one)
    eval_images: str | None = None
    # the picked length: the shortest point whose AP is within this many AP points of the best
    tolerance: float = 1.0
    max_iters: int = 0  # > 0: never pick longer than this (the grid's budget)


def check_curve(curve: CurveConfig) -> list[int]:
    """The sorted evaluation points; refuses an empty, non-positive or duplicated list."""
    pts = sorted(int(i) for i in curve.iters)
    if not pts or pts[0] < 1 or len(set(pts)) != len(pts):
        raise ConfigError(f"curve.iters: need distinct positive iterations, got {curve.iters}")
    if not curve.eval_ann or not curve.eval_images:
        raise ConfigError("curve.eval_ann and curve.eval_images: the tune split must be named")
    if curve.tolerance < 0:
        raise ConfigError(f"curve.tolerance must be >= 0, got {curve.tolerance}")
    return pts


def curve_overrides(points: list[int]) -> list[str]:
    """Fine-tuning overrides: as long as the last point, a kept checkpoint at every point."""
    every = math.gcd(*points)
    return [
        f"train.max_iters={points[-1]}",
        f"train.checkpoint_every={every}",
        f"train.keep_checkpoints={points[-1] // every + 1}",
    ]


def pick_length(
    points: list[dict[str, Any]], tolerance: float, max_iters: int = 0
) -> dict[str, Any]:
    """Where AP flattens: the shortest point within ``tolerance`` AP points of the best one.

    Args:
        points: ``[{"iter", "AP", ...}]`` (AP in points), ascending ``iter``.
        tolerance: AP points.
        max_iters: > 0: consider only points up to this length (the budget).

    Returns:
        ``{"iters", "AP", "best_AP", "best_iters", "gap_to_best", "last_slope_per_1k"}``:
        the slope is the AP gained per 1,000 iterations between the last two points considered
        (how far from flat the curve still is there); None entries where undefined.
    """
    limit = max_iters if max_iters > 0 else math.inf
    pts = [p for p in points if p.get("AP") is not None and p["iter"] <= limit]
    if not pts:
        return {"iters": None, "AP": None, "best_AP": None, "best_iters": None,
                "gap_to_best": None, "last_slope_per_1k": None}  # fmt: skip
    best = max(pts, key=lambda p: p["AP"])
    pick = next(p for p in pts if p["AP"] >= best["AP"] - tolerance)
    slope = None
    if len(pts) >= 2:
        a, b = pts[-2], pts[-1]
        slope = 1000.0 * (b["AP"] - a["AP"]) / (b["iter"] - a["iter"])
    return {
        "iters": pick["iter"],
        "AP": pick["AP"],
        "best_AP": best["AP"],
        "best_iters": best["iter"],
        "gap_to_best": best["AP"] - pick["AP"],
        "last_slope_per_1k": slope,
    }


def _eval_config(ft: Config, curve: CurveConfig) -> Config:
    from omegaconf import OmegaConf

    ev = OmegaConf.merge(ft, {})
    ev.data.val_ann, ev.data.val_images = curve.eval_ann, curve.eval_images
    ev.model.weights = None  # the checkpoint holds every weight
    return ev  # type: ignore[return-value]


def _point(eval_dir: Path, iteration: int, ev: Config, ckpt: Path) -> dict[str, Any]:
    from drcl.finetune.runner import evaluate_checkpoint

    metrics = eval_dir / "metrics_bbox.json"
    if not metrics.is_file():
        evaluate_checkpoint(ev, ckpt, eval_dir, ["bbox"])
    m = json.loads(metrics.read_text())
    return {"iter": iteration, **{k: _percent(m.get(k)) for k in METRICS}}


def _checkpoints(run_dir: Path) -> dict[int, Path]:
    """``{iteration: checkpoint}`` of the complete ones (sha256 sidecar matches)."""
    from drcl.engine import checkpoint as ckpt

    return {int(p.stem.split("_")[1]): p for p in ckpt.list_checkpoints(run_dir) if ckpt.verify(p)}


def run_curve(config: str | Path, work_dir: str | Path, overrides: list[str] | None = None) -> Path:
    """Run the curve of ablation file ``config`` into ``WORK_DIR/curve``; returns curve.json."""
    from drcl.ablation.runner import (
        ensure_generic,
        finetune_config,
        load_ablate_config,
        row_init_path,
    )
    from drcl.finetune.runner import train_detector
    from drcl.utils.io import ensure_writable_dir

    cfg = load_ablate_config(config, overrides)
    points = check_curve(cfg.curve)
    work_dir = ensure_writable_dir(work_dir)
    if row_init_path(work_dir, cfg.baseline, 0) is not None:
        raise ConfigError(f"curve: the baseline row {cfg.baseline!r} must not need pre-training")
    generic = ensure_generic(cfg, work_dir)
    cfg.finetune_overrides = [*cfg.finetune_overrides, *curve_overrides(points)]
    ft = finetune_config(cfg, cfg.baseline, 0, None, generic)
    out = work_dir / "curve"
    run_dir = out / "finetune"
    ckpts = _checkpoints(run_dir)
    if not all(i in ckpts for i in points):
        train_detector(ft, run_dir, ft.finetune.init, resume=True, stage="finetune_curve")
        ckpts = _checkpoints(run_dir)
    missing = [i for i in points if i not in ckpts]
    if missing:
        raise RuntimeError(f"curve: no checkpoint at iterations {missing} in {run_dir}")
    ev = _eval_config(ft, cfg.curve)
    rows = []
    for i in points:
        rows.append(_point(out / "eval" / f"{i:07d}", i, ev, ckpts[i]))
        log.info("curve: %d iterations: AP %s on %s", i, rows[-1]["AP"], cfg.curve.eval_ann)
    atomic_write_text(out / "metrics.jsonl", "".join(json.dumps(r) + "\n" for r in rows))
    result = {
        "row": cfg.baseline,
        "eval_ann": cfg.curve.eval_ann,
        "points": rows,
        "picked": pick_length(rows, cfg.curve.tolerance, cfg.curve.max_iters),
        # without the budget's cap: how much AP the cap leaves on the table
        "uncapped": pick_length(rows, cfg.curve.tolerance),
        "rule": (
            f"shortest length within {cfg.curve.tolerance} AP of the best point"
            + (f", at most {cfg.curve.max_iters} iterations" if cfg.curve.max_iters > 0 else "")
        ),
        "caveat": (
            "one run with the lr schedule of the longest point: earlier points are read before "
            "their own lr decay, so the picked length errs long"
        ),
    }
    return atomic_write_json(out / "curve.json", result, indent=1)


def main(argv: list[str] | None = None) -> int:
    """``python -m drcl.ablation.curve CONFIG --work-dir DIR [key=value ...]``."""
    from drcl.utils.console import setup_logging

    parser = argparse.ArgumentParser(prog="python -m drcl.ablation.curve", description=__doc__)
    parser.add_argument("config", help="ablation YAML with a curve section")
    parser.add_argument("--work-dir", required=True, help="the grid's work dir (shares generic/)")
    parser.add_argument("overrides", nargs="*", help="key=value, as for drcl ablate")
    args = parser.parse_args(argv)
    setup_logging()
    try:
        path = run_curve(args.config, args.work_dir, args.overrides)
    except (ConfigError, FileNotFoundError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    picked = json.loads(path.read_text())["picked"]
    print(json.dumps({"curve": str(path), "picked": picked}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
