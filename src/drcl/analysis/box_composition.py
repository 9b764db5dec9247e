"""What LCL actually contrasts: the class composition of the selected boxes over training.

Evidence that DRB works independently of accuracy: per logging interval, the share of rare,
common and frequent boxes among the boxes with a known class, and the normalised entropy of their
class histogram, ``H = -sum_c p_c log p_c / log C`` (1 = every one of the C classes equally
often, 0 = one class only).

Two sources:

* a training run: pre-training logs ``box_share_r|c|f``, ``box_entropy`` and ``boxes_known`` in
  ``metrics.jsonl`` (boxes valid in both views of the batches of each logging interval, rank 0);
* a simulation (:func:`drcl.analysis.runner.simulate_box_composition`): the pre-training
  sampler and box selection replayed over a whole schedule without a model, the same draws as
  training (same seeds), counted before the random crops drop boxes. Seconds instead of a
  training run.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

# counted during pre-training (drcl.pretrain.box_composition); re-exported for the figure's users
from drcl.pretrain.box_composition import (
    KEYS,
    BoxCompositionMeter,
    composition,
    label_groups,
)

__all__ = [
    "KEYS",
    "VARIANTS",
    "BoxCompositionMeter",
    "composition",
    "label_groups",
    "plot_box_composition",
    "rows_from_metrics",
]

# the three runs of the mechanism figure: pretrain.* overrides on top of a pre-training config
VARIANTS: dict[str, list[str]] = {
    "uniform sampling": ["pretrain.drb.enabled=false"],
    "image-level RFS (alpha = 0)": [
        "pretrain.drb.schedule=none",
        "pretrain.drb.alpha_start=0.0",
    ],
    "DRB (alpha 0 -> 1)": [],
}


# ----------------------------------------------------------------------------- runs and plot


def rows_from_metrics(metrics: Sequence[dict[str, Any]]) -> list[dict[str, float]]:
    """The rows of a run's ``metrics.jsonl`` that carry the box composition."""
    return [r for r in metrics if all(isinstance(r.get(k), int | float) for k in KEYS[:4])]


def plot_box_composition(runs: dict[str, list[dict[str, float]]], out_png: str | Path) -> Path:
    """One panel per run, side by side: stacked r/c/f shares, entropy and alpha on top.

    Args:
        runs: ``{name: rows}`` with ``iter``, ``box_share_r|c|f``, ``box_entropy`` (``alpha``
            optional), e.g. from :func:`rows_from_metrics` or :func:`simulate_box_composition`.
        out_png: where the PNG goes (written atomically).
    """
    from drcl.analysis.plotting import new_figure, save_figure

    if not runs or not all(runs.values()):
        empty = [n for n, r in runs.items() if not r]
        raise ValueError(f"box composition: no rows to plot for {empty or 'any run'}")
    fig = new_figure(4.6 * len(runs), 3.6)
    axes = fig.subplots(1, len(runs), sharey=True, squeeze=False)[0]
    for ax, (name, rows) in zip(axes, runs.items(), strict=True):
        _panel(ax, name, rows)
    axes[0].set_ylabel("share of contrasted boxes / entropy")
    axes[-1].legend(loc="lower right", fontsize=7, framealpha=0.9)
    return save_figure(fig, out_png)


def _panel(ax: Any, name: str, rows: list[dict[str, float]]) -> None:
    from drcl.data.groups import GROUP_COLORS, GROUP_NAMES

    x = [r["iter"] for r in rows]
    shares = [[r[f"box_share_{g}"] for r in rows] for g in "rcf"]
    ax.stackplot(
        x,
        *shares,
        labels=[GROUP_NAMES[g] for g in "rcf"],
        colors=[GROUP_COLORS[g] for g in "rcf"],
        alpha=0.75,
    )
    ax.plot(x, [r["box_entropy"] for r in rows], color="black", lw=1.6, label="entropy (norm.)")
    if all("alpha" in r for r in rows):
        ax.plot(x, [r["alpha"] for r in rows], color="#1f77b4", ls="--", lw=1.2, label="alpha")
    rare = np.nanmean(shares[0])
    ax.set_title(f"{name}\nmean rare share {rare:.1%}", fontsize=9)
    ax.set_xlabel("iteration")
    ax.set_ylim(0, 1)
    ax.set_xlim(min(x), max(x))
