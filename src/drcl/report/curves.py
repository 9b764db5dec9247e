"""Training curves from ``metrics.jsonl``: every loss term, the learning rate and the DRB alpha
against the iteration, one PNG per run set (pre-training runs, fine-tuning runs); and the crop
probe's accuracy per frequency group against the iteration (``probe/*``, ``pretrain.probe.every``)
when a run logged it."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # headless: no display, no GUI backend
import matplotlib.pyplot as plt  # noqa: E402

from drcl.report.doc import Figure, Note  # noqa: E402
from drcl.report.runs import RunInfo  # noqa: E402

RUN_SETS = ("pre-training", "fine-tuning", "other")
PANEL_COLUMNS = 3


def curve_keys(runs: list[RunInfo]) -> list[str]:
    """Plotted keys: ``loss``, then ``loss_*`` terms (sorted), ``lr``, ``alpha`` — those logged."""
    seen: set[str] = set()
    for run in runs:
        for row in run.metrics:
            seen.update(k for k, v in row.items() if _is_number(v))
    losses = sorted(k for k in seen if k.startswith("loss_"))
    keys = (["loss"] if "loss" in seen else []) + losses
    return keys + [k for k in ("lr", "alpha") if k in seen]


def _is_number(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)


def series(rows: list[dict[str, Any]], key: str) -> tuple[list[float], list[float]]:
    """(iterations, values) of ``key``; rows without a finite value (or ``iter``) are skipped."""
    xs, ys = [], []
    for row in rows:
        if _is_number(row.get(key)) and _is_number(row.get("iter")):
            xs.append(float(row["iter"]))
            ys.append(float(row[key]))
    return xs, ys


def plot_curves(runs: list[RunInfo], colors: dict[str, Any], title: str, out_png: Path) -> None:
    """One figure, one panel per key, one line per run (the same colour in every panel)."""
    keys = curve_keys(runs)
    ncols = min(PANEL_COLUMNS, len(keys))
    nrows = math.ceil(len(keys) / ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(5 * ncols, 3.4 * nrows), squeeze=False)
    # the grid may have spare panels (nrows * ncols >= len(keys))
    for ax, key in zip(axes.flat, keys, strict=False):
        for run in runs:
            xs, ys = series(run.metrics, key)
            if xs:
                ax.plot(xs, ys, label=run.name, color=colors[run.name], linewidth=1.3)
        ax.set_title(key)
        ax.set_xlabel("iteration")
        ax.set_ylabel(key)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    for ax in list(axes.flat)[len(keys) :]:
        ax.axis("off")
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(out_png, dpi=90)
    plt.close(fig)


def run_colors(runs: list[RunInfo]) -> dict[str, Any]:
    """A fixed colour per run, so a run looks the same in every plot of the report."""
    cmap = plt.get_cmap("tab10")
    return {r.name: cmap(i % 10) for i, r in enumerate(runs)}


def curves_section(runs: list[RunInfo], out_dir: Path) -> list[Figure | Note]:
    """Blocks of the training-curves section; PNGs are written to ``out_dir``."""
    colors = run_colors(runs)
    blocks: list[Figure | Note] = []
    for kind in RUN_SETS:
        members = [r for r in runs if r.kind == kind and r.metrics]
        if not members or not curve_keys(members):
            continue
        name = f"curves_{kind.replace('-', '')}.png"
        names = ", ".join(r.name for r in members)
        plot_curves(members, colors, f"{kind} runs: {names}", out_dir / name)
        blocks.append(Figure(name, f"Training curves of the {kind} runs ({names})"))
    blocks += probe_section(runs, colors, out_dir)
    for run in runs:
        if "metrics" in run.problems:
            blocks.append(Note(f"curves of {run.name}: {run.problems['metrics']}"))
        elif not run.metrics:
            blocks.append(Note(f"curves of {run.name}: no metrics.jsonl in {run.path}"))
    return blocks


# ----------------------------------------------------------------------------- probe curves
PROBE_GROUPS = ("all", "rare", "common", "frequent", "twins")
PROBE_STYLES = {"ncm": "-", "knn": "--"}  # classifier -> line style
PROBE_MONITORS = ("probe/std", "probe/erank")
PROBE_PNG = "curves_probe.png"


def probe_panels(runs: list[RunInfo]) -> list[str]:
    """Panels of the probe figure: groups with a logged accuracy, then the collapse monitors."""
    seen = {k for run in runs for row in run.metrics for k, v in row.items() if _is_number(v)}
    groups = [g for g in PROBE_GROUPS if any(f"probe/{c}/{g}" in seen for c in PROBE_STYLES)]
    return groups + [k for k in PROBE_MONITORS if k in seen]


def plot_probe_curves(runs: list[RunInfo], colors: dict[str, Any], out_png: Path) -> None:
    """One panel per frequency group: probe accuracy (mean per-class %) against the iteration,
    a colour per run, solid NCM and dashed kNN; then std and effective rank."""
    panels = probe_panels(runs)
    ncols = min(PANEL_COLUMNS, len(panels))
    nrows = math.ceil(len(panels) / ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(5 * ncols, 3.4 * nrows), squeeze=False)
    for ax, panel in zip(axes.flat, panels, strict=False):
        lines = {panel: "-"} if panel in PROBE_MONITORS else {
            f"probe/{c}/{panel}": style for c, style in PROBE_STYLES.items()
        }  # fmt: skip
        for run in runs:
            for key, style in lines.items():
                xs, ys = series(run.metrics, key)
                if xs:
                    label = f"{run.name} {key.split('/')[1]}"
                    ax.plot(xs, ys, style, color=colors[run.name], label=label, linewidth=1.3)
        ax.set_title(panel if panel in PROBE_MONITORS else f"probe accuracy, {panel} (%)")
        ax.set_xlabel("iteration")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    for ax in list(axes.flat)[len(panels) :]:
        ax.axis("off")
    fig.suptitle("crop probe during pre-training (solid: nearest class mean, dashed: kNN)")
    fig.tight_layout()
    fig.savefig(out_png, dpi=90)
    plt.close(fig)


def probe_section(runs: list[RunInfo], colors: dict[str, Any], out_dir: Path) -> list[Figure]:
    """The probe figure of the runs that logged ``probe/*`` (none: no block)."""
    members = [r for r in runs if r.metrics and probe_panels([r])]
    if not members:
        return []
    plot_probe_curves(members, colors, out_dir / PROBE_PNG)
    names = ", ".join(r.name for r in members)
    caption = (
        f"Crop probe against the iteration ({names}): accuracy per frequency group, mean over "
        "the classes of the group, and the collapse monitors (std of the L2-normalised "
        "features, healthy about 1/sqrt(d); effective rank)"
    )
    return [Figure(PROBE_PNG, caption)]
