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

import logging
import math
from dataclasses import dataclass, field
from typing import Any

from drcl.config import ConfigError

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
