"""Per-seed metrics -> ``results.json`` (mean, std, paired CIs) and the markdown / csv tables.

``results.json``::

    {"rows": {ROW: {"AP": {"mean", "std", "values"}, ..., "diff_vs_baseline": {"AP":
     {"mean", "ci95": [lo, hi] | null, "n"}, ...}, "components", "init", "equal_compute",
     "box_stage", "seeds_done", "pretrain_epochs", "pretrain_iters", "finetune_iters"}},
     "baseline", "seeds", "metrics", "unit", "ci_method", "finetune_recipe_sha256", ...}

``components`` may hold ``sup`` (LCL supervised by the box labels). ``pretrain_epochs`` is the
2DRCL dose in epochs of the training set (0: no 2DRCL; null: not known), ``pretrain_iters`` its
optimizer iterations, ``finetune_iters`` the fine-tuning length; present when the runner gives
them.

Values are AP points (percent), aligned with ``seeds`` (null where a seed has not run or a
metric is undefined). The baseline row has no ``diff_vs_baseline``.
"""

from __future__ import annotations

import csv
import io
from typing import Any

from drcl.ablation.rows import COMPONENTS, ROWS, SUPERVISED
from drcl.evaluation.compare import excludes_zero, mean_std, paired_difference

METRICS = ("AP", "AP50", "APr", "APc", "APf")
CI_METHOD = (
    "paired by seed (seed s of every row uses the same pre-training and fine-tuning seed); "
    "Student-t 95% interval over the per-seed differences: mean(d) ± t(0.975, K-1)·sd(d)/√K; "
    "null with fewer than 2 seeds"
)


def _percent(v: Any) -> float | None:
    if v is None:
        return None
    v = float(v)
    return None if v != v else 100.0 * v  # NaN: undefined (e.g. no rare class in val)


def summarize(
    per_seed: dict[str, dict[int, dict[str, Any]]],
    seeds: list[int],
    baseline: str,
    doses: dict[str, dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """Statistics of every row from ``{row: {seed: metrics_bbox}}`` (metrics as fractions);
    ``doses``: ``{row: {"pretrain_epochs", "pretrain_iters", "finetune_iters"}}`` to record.

    Returns:
        ``{"rows": {...}}`` in the layout of the module docstring (only rows present in
        ``per_seed``; ``diff_vs_baseline`` only when the baseline is present).
    """
    values = {
        row: {m: [_percent(runs.get(s, {}).get(m)) for s in seeds] for m in METRICS}
        for row, runs in per_seed.items()
    }
    out: dict[str, Any] = {}
    for row, vals in values.items():
        entry: dict[str, Any] = {}
        for m in METRICS:
            mean, std = mean_std(vals[m])
            entry[m] = {"mean": mean, "std": std, "values": vals[m]}
        if row != baseline and baseline in values:
            entry["diff_vs_baseline"] = {
                m: paired_difference(vals[m], values[baseline][m]) for m in METRICS
            }
        spec = ROWS[row]
        entry["components"] = list(spec.components or [])
        entry["init"] = spec.init
        entry["equal_compute"] = spec.equal_compute
        entry["box_stage"] = spec.box_stage
        entry["seeds_done"] = [s for s in seeds if s in per_seed[row]]
        entry.update((doses or {}).get(row, {}))
        out[row] = entry
    return {"rows": out}


def _cell(stat: dict[str, Any]) -> str:
    if stat["mean"] is None:
        return "n/a"
    return f"{stat['mean']:.2f}" + ("" if stat["std"] is None else f" ± {stat['std']:.2f}")


def _diff_cell(diff: dict[str, Any]) -> str:
    if diff["mean"] is None:
        return "n/a"
    text = f"{diff['mean']:+.2f}"
    if diff["ci95"] is None:
        return text
    lo, hi = diff["ci95"]
    text += f" [{lo:+.2f}, {hi:+.2f}]"
    return f"**{text}**" if excludes_zero(diff["ci95"]) else text


def _epochs_cell(epochs: float | None) -> str:
    if epochs is None:
        return "?"
    return "" if epochs == 0 else f"{epochs:g}"


def _init_name(entry: dict[str, Any]) -> str:
    return f"{entry['init']}{' (equal compute)' if entry['equal_compute'] else ''}"


def markdown_table(results: dict[str, Any]) -> str:
    """``mean ± std`` per row and metric, then the paired differences to the baseline with their
    95% CIs; a difference whose CI excludes 0 is in bold."""
    rows, baseline = results["rows"], results.get("baseline")
    # the supervised-LCL and dose columns only when a row has them (older tables unchanged)
    sup = any(SUPERVISED in e["components"] for e in rows.values())
    dose = any("pretrain_epochs" in e for e in rows.values())
    head = ["row", "init", *[c.upper() for c in COMPONENTS], *(["LCL SUP"] if sup else [])]
    head += ["BOX", *(["2DRCL epochs"] if dose else []), "seeds", *METRICS]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for name, e in rows.items():
        marks = ["✓" if c in e["components"] else "" for c in COMPONENTS]
        marks += ["✓" if SUPERVISED in e["components"] else ""] if sup else []
        marks.append("✓" if e.get("box_stage") else "")
        marks += [_epochs_cell(e.get("pretrain_epochs"))] if dose else []
        cells = [name, _init_name(e), *marks, str(len(e["seeds_done"]))]
        lines.append("| " + " | ".join([*cells, *[_cell(e[m]) for m in METRICS]]) + " |")
    diffs = [(n, e["diff_vs_baseline"]) for n, e in rows.items() if "diff_vs_baseline" in e]
    if diffs:
        lines += [
            "",
            f"Difference to `{baseline}` in AP points, paired by seed, with the 95% Student-t "
            "interval over seeds; **bold**: the interval excludes 0.",
            "",
            "| row | " + " | ".join(f"Δ{m}" for m in METRICS) + " |",
            "|" + "---|" * (len(METRICS) + 1),
        ]
        for name, d in diffs:
            lines.append(f"| {name} | " + " | ".join(_diff_cell(d[m]) for m in METRICS) + " |")
    return "\n".join(lines) + "\n"


def csv_table(results: dict[str, Any]) -> str:
    """One line per row: components (0/1), then mean, std, diff, ci_lo, ci_hi per metric."""
    buf = io.StringIO()
    writer = csv.writer(buf)
    stats = ("mean", "std", "diff", "ci_lo", "ci_hi")
    writer.writerow(
        ["row", "init", *COMPONENTS, "box", *[f"{m}_{s}" for m in METRICS for s in stats]]
    )
    for name, e in results["rows"].items():
        cells: list[Any] = [name, _init_name(e), *[int(c in e["components"]) for c in COMPONENTS]]
        cells.append(int(bool(e.get("box_stage"))))
        for m in METRICS:
            d = e.get("diff_vs_baseline", {}).get(m, {"mean": None, "ci95": None})
            ci = d["ci95"] or [None, None]
            cells += [_fmt(e[m]["mean"]), _fmt(e[m]["std"]), _fmt(d["mean"]), *map(_fmt, ci)]
        writer.writerow(cells)
    return buf.getvalue()


def _fmt(v: float | None) -> str:
    return "" if v is None else f"{v:.2f}"
