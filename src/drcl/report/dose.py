"""The dose figure of an ablation grid (issue 20): what more 2DRCL pre-training buys.

Left: crop-probe accuracy per frequency group against 2DRCL pre-training epochs, from the
``metrics.jsonl`` of every pre-training run of the dose family (``full``, ``full@1ep``,
``full@12ep``, ...; the probe that ``pretrain.probe.every`` logs). Right: box AP and APr after
fine-tuning (mean ± std over seeds, ``results.json``) at each fine-tuned dose; dose 0 is the
baseline row (the generic init).

    python -m drcl.report.dose work/v2_grid --out work/v2_grid/report

The probe's key names are read from the logs, not assumed: a numeric key whose name holds
``probe`` and a group (``all``, ``rare``/``r``, ``common``/``c``, ``frequent``/``f``), split on
``/ . _ -``; with several readouts or classifiers logged, C5 before C4 before RoI, and NCM before
kNN. Nested records (``{"probe": {"C5": {"ncm": {"rare": ...}}}}``) are flattened first. Runs
without probe keys leave the left panel empty with a note; nothing fails.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from drcl.utils.run_dir import METRICS, read_metrics

log = logging.getLogger(__name__)

GROUPS = ("all", "rare", "common", "frequent")
_GROUP_TOKENS = {"all": "all", "rare": "rare", "r": "rare", "common": "common", "c": "common",
                 "frequent": "frequent", "f": "frequent"}  # fmt: skip
_READOUT_RANK = {"c5": 0, "c4": 1, "roi": 2}
_CLASSIFIER_RANK = {"ncm": 0, "knn": 1}
GROUP_COLORS = {"all": "black", "rare": "tab:red", "common": "tab:orange", "frequent": "tab:blue"}


@dataclass
class DoseRun:
    """One pre-training run of the dose family: its probe series against epochs."""

    row: str
    seed: int
    epochs: float  # the run's dose
    probe: dict[str, list[tuple[float, float]]] = field(default_factory=dict)  # group -> (ep, acc)


def flatten(record: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested dicts as ``a/b/c`` keys."""
    out: dict[str, Any] = {}
    for k, v in record.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(flatten(v, f"{key}/"))
        else:
            out[key] = v
    return out


def _number(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)


def probe_keys(records: list[dict[str, Any]]) -> dict[str, str]:
    """``{group: key}`` of the probe accuracies logged in ``records`` (flattened), one readout
    and classifier for all groups (the preferred one that covers most groups); {} if none."""
    by_signature: dict[tuple[str, ...], dict[str, str]] = {}
    for rec in records:
        for key, v in flatten(rec).items():
            tokens = re.split(r"[/._\-]", key.lower())
            if "probe" not in tokens or not _number(v):
                continue
            at = [i for i, t in enumerate(tokens) if t in _GROUP_TOKENS]
            if not at:
                continue
            group = _GROUP_TOKENS[tokens[at[-1]]]
            signature = tuple(t for i, t in enumerate(tokens) if i != at[-1])
            by_signature.setdefault(signature, {}).setdefault(group, key)
    if not by_signature:
        return {}

    def rank(sig: tuple[str, ...]) -> tuple[int, int, int]:
        readout = min((_READOUT_RANK[t] for t in sig if t in _READOUT_RANK), default=3)
        classifier = min((_CLASSIFIER_RANK[t] for t in sig if t in _CLASSIFIER_RANK), default=2)
        return (-len(by_signature[sig]), readout, classifier)

    return by_signature[min(by_signature, key=rank)]


def probe_series(
    records: list[dict[str, Any]], iters_per_epoch: float
) -> dict[str, list[tuple[float, float]]]:
    """``{group: [(epoch, accuracy), ...]}`` of the probe in a run's metrics records."""
    keys = probe_keys(records)
    out: dict[str, list[tuple[float, float]]] = {}
    for rec in records:
        flat = flatten(rec)
        if not _number(flat.get("iter")):
            continue
        for group, key in keys.items():
            if _number(flat.get(key)):
                out.setdefault(group, []).append((flat["iter"] / iters_per_epoch, flat[key]))
    return {g: sorted(v) for g, v in out.items()}


def dose_family(results: dict[str, Any], family: str) -> list[str]:
    """Rows of ``family`` (``full``, ``full@Nep``) in ``results``, by dose."""
    rows = [r for r in results["rows"] if r == family or r.startswith(f"{family}@")]
    return sorted(rows, key=lambda r: results["rows"][r].get("pretrain_epochs") or 0.0)


def read_dose_runs(work_dir: Path, results: dict[str, Any], family: str) -> list[DoseRun]:
    """The probe series of every pre-training run of ``family``."""

    runs = []
    for row in dose_family(results, family):
        entry = results["rows"][row]
        epochs, iters = entry.get("pretrain_epochs"), entry.get("pretrain_iters")
        if not epochs or not iters:
            log.warning("dose figure: row %s has no dose in results.json; skipped", row)
            continue
        for seed in entry.get("seeds_done", []):
            path = work_dir / row / f"seed{seed}" / "pretrain" / METRICS
            probe = probe_series(read_metrics(path), iters / epochs) if path.is_file() else {}
            runs.append(DoseRun(row, seed, float(epochs), probe))
    return runs


def _ap_points(results: dict[str, Any], family: str, metric: str) -> list[tuple[float, Any, Any]]:
    rows = [results.get("baseline"), *dose_family(results, family)]
    out = []
    for row in rows:
        e = results["rows"].get(row) if row else None
        if e is None or e.get(metric, {}).get("mean") is None:
            continue
        out.append((e.get("pretrain_epochs") or 0.0, e[metric]["mean"], e[metric]["std"]))
    return sorted(out, key=lambda p: p[0])


def plot_dose(
    work_dir: str | Path, out_png: str | Path, family: str = "full"
) -> tuple[Path, list[str]]:
    """Draw the dose figure of the grid in ``work_dir``; returns (png, notes)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    work_dir = Path(work_dir)
    results = json.loads((work_dir / "results.json").read_text())
    runs = read_dose_runs(work_dir, results, family)
    notes = []
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    styles = ["-", "--", ":", "-."]
    longest = sorted({r.epochs for r in runs}, reverse=True)
    for run in runs:
        style = styles[longest.index(run.epochs) % len(styles)]
        for group in GROUPS:
            pts = run.probe.get(group, [])
            if pts:
                left.plot(*zip(*pts, strict=True), style, color=GROUP_COLORS[group],
                          marker="o", markersize=3, linewidth=1.2,
                          label=f"{group} ({run.row}, seed {run.seed})")  # fmt: skip
    if not any(r.probe for r in runs):
        notes.append("no probe logged by the pre-training runs (pretrain.probe.every)")
        left.text(0.5, 0.5, "no probe logged", ha="center", va="center", transform=left.transAxes)
    left.set_xlabel("2DRCL pre-training epochs")
    left.set_ylabel("probe accuracy on tune (%)")
    left.set_title(f"crop probe per frequency group ({family})")
    left.grid(alpha=0.3)
    if left.get_legend_handles_labels()[0]:
        left.legend(fontsize=6, ncol=2)
    for metric, color in (("AP", "black"), ("APr", "tab:red")):
        pts = _ap_points(results, family, metric)
        if pts:
            xs, ys, sd = zip(*pts, strict=True)
            right.errorbar(xs, ys, yerr=[s or 0.0 for s in sd], color=color, marker="o",
                           capsize=3, label=f"box {metric}")  # fmt: skip
    if not _ap_points(results, family, "AP"):
        notes.append("no fine-tuned row of the dose family in results.json")
    right.set_xlabel("2DRCL pre-training epochs (0: the baseline init)")
    right.set_ylabel("AP on val (points), mean ± std over seeds")
    right.set_title("after fine-tuning")
    right.grid(alpha=0.3)
    if right.get_legend_handles_labels()[0]:
        right.legend(fontsize=8)
    fig.tight_layout()
    out_png = Path(out_png)
    out_png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out_png, dpi=90)
    plt.close(fig)
    return out_png, notes


def _fmt(stat: dict[str, Any] | None) -> str:
    if not stat or stat.get("mean") is None:
        return "n/a"
    return f"{stat['mean']:.2f}" + ("" if stat.get("std") is None else f" ± {stat['std']:.2f}")


def dose_table(work_dir: str | Path, family: str = "full") -> str:
    """Markdown: per dose, the seeds, AP and APr, and the last probe reading per group (mean over
    seeds)."""
    work_dir = Path(work_dir)
    results = json.loads((work_dir / "results.json").read_text())
    runs = read_dose_runs(work_dir, results, family)
    head = ["row", "2DRCL epochs", "seeds", "AP", "APr", *[f"probe {g}" for g in GROUPS]]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for row in [results.get("baseline"), *dose_family(results, family)]:
        e = results["rows"].get(row) if row else None
        if e is None:
            continue
        probes = []
        for g in GROUPS:
            last = [r.probe[g][-1][1] for r in runs if r.row == row and r.probe.get(g)]
            probes.append(f"{sum(last) / len(last):.1f}" if last else "n/a")
        cells = [row, f"{e.get('pretrain_epochs') or 0:g}", str(len(e.get("seeds_done", [])))]
        cells += [_fmt(e.get("AP")), _fmt(e.get("APr")), *probes]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    """``python -m drcl.report.dose WORK_DIR --out DIR [--family full]``."""
    parser = argparse.ArgumentParser(prog="python -m drcl.report.dose", description=__doc__)
    parser.add_argument("work_dir", help="an ablation work dir (results.json)")
    parser.add_argument("--out", required=True, help="folder for dose.png and dose.md")
    parser.add_argument("--family", default="full", help="the row whose doses are drawn")
    args = parser.parse_args(argv)
    if not (Path(args.work_dir) / "results.json").is_file():
        print(f"error: {args.work_dir}: no results.json", file=sys.stderr)
        return 1
    png, notes = plot_dose(args.work_dir, Path(args.out) / "dose.png", args.family)
    table = dose_table(args.work_dir, args.family)
    md = f"![dose]({png.name})\n\n{table}" + "".join(f"\nnote: {n}\n" for n in notes)
    from drcl.utils.io import atomic_write_text

    atomic_write_text(Path(args.out) / "dose.md", md)
    print(md)
    return 0


if __name__ == "__main__":
    sys.exit(main())
