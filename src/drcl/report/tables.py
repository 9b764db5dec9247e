"""Tables of the report: metrics side by side and the AP of the rarest classes.

A run folder holds one run (one seed), and the seed alone moves AP by 1-3 points on the demo
(README). So "best" marks and deltas are shown only where a difference is larger than a stated
seed noise (``drcl report --seed-noise N``, in AP points); without one, a one-line note says that
single runs cannot rank them. The ablation section ranks by its own confidence intervals.
"""

from __future__ import annotations

import math
from typing import Any

from drcl.report.doc import Cell, Note, Table, Text
from drcl.report.runs import RunInfo, metric_value, metrics_scale

MAIN_COLUMNS = ("AP", "AP50", "AP75", "APr", "APc", "APf")
COCOLT_COLUMNS = ("AP1", "AP2", "AP3", "AP4")
IOU_TITLES = {"bbox": "box", "segm": "mask"}
DECIMALS = 1  # papers report AP in percent with one decimal
RAREST_N = 10
GROUP_ORDER = {"r": 0, "c": 1, "f": 2}


def fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.{DECIMALS}f}"


def fmt_delta(value: float | None, ref: float | None) -> str:
    """``+1.2`` / ``-0.3`` / ``+0.0``: the difference of the *shown* (rounded) values, so that
    a delta always matches the two numbers a reader sees."""
    if value is None or ref is None:
        return ""
    return f"{round(value, DECIMALS) - round(ref, DECIMALS):+.{DECIMALS}f}"


def best_flags(values: list[float | None], noise: float | None = None) -> list[bool]:
    """True for the one value that beats every other by more than ``noise`` (shown precision).

    No value is marked when ``noise`` is None (single runs cannot be ranked), when fewer than two
    values are known, or on a tie (0.0 against 0.0 is no "best").
    """
    shown = [None if v is None else round(v, DECIMALS) for v in values]
    known = sorted((v for v in shown if v is not None), reverse=True)
    if noise is None or len(known) < 2 or known[0] - known[1] <= noise + 1e-9:
        return [False] * len(values)
    return [v is not None and math.isclose(v, known[0]) for v in shown]


def shown_delta(value: float | None, ref: float | None, noise: float | None) -> str:
    """:func:`fmt_delta` where ``|delta| > noise``; '' otherwise (and without a noise)."""
    text = fmt_delta(value, ref)
    if noise is None or not text or abs(float(text)) <= noise + 1e-9:
        return ""
    return text


def comparison_rows(
    names: list[str], columns: list[list[float | None]], noise: float | None = None
) -> list[list[Cell]]:
    """Rows ``[name, v_1, ..., v_K]``: the best per column bold and deltas vs the first row,
    only where the difference exceeds ``noise`` (:func:`best_flags`, :func:`shown_delta`).

    Args:
        names: R row labels (runs).
        columns: K columns, each R values (None = unknown).
        noise: the seed noise in AP points; None: nothing is marked.
    """
    flags = [best_flags(col, noise) for col in columns]
    rows = []
    for r, name in enumerate(names):
        row = [Cell(name)]
        for k, col in enumerate(columns):
            delta = shown_delta(col[r], col[0], noise) if r > 0 else ""
            row.append(Cell(fmt(col[r]), bold=flags[k][r], delta=delta))
        rows.append(row)
    return rows


def noise_note(num_runs: int, noise: float | None) -> Note | None:
    """The one line that says why nothing (or little) is marked; None for a single row."""
    if num_runs < 2:
        return None
    if noise is None:
        return Note(
            "single runs: the seed alone moves AP by 1-3 points, so one run per row cannot rank "
            "them; no best marks or deltas (drcl report --seed-noise N marks differences larger "
            "than N points; an ablation over seeds gives intervals)"
        )
    return Note(
        f"best marks and deltas only where a difference exceeds the stated seed noise of "
        f"{noise:g} AP points (single runs)"
    )


def metrics_table(
    runs: list[RunInfo], iou_type: str, noise: float | None = None
) -> list[Table | Note | Text]:
    """The box (``bbox``) or mask (``segm``) metrics of every run that has them; ``noise``: the
    stated seed noise in AP points (None: no best marks or deltas)."""
    have = [r for r in runs if iou_type in r.evals]
    what = IOU_TITLES[iou_type]
    if not have:
        reasons = [f"{r.name}: {r.problems[iou_type]}" for r in runs if iou_type in r.problems]
        hint = "; ".join(reasons) or f"no run has eval/metrics_{iou_type}.json"
        return [Note(f"{what} metrics: {hint}")]
    cols = list(MAIN_COLUMNS)
    if any(metric_value(r.evals[iou_type], k) is not None for r in have for k in COCOLT_COLUMNS):
        cols += COCOLT_COLUMNS
    values = [[metric_value(r.evals[iou_type], k) for r in have] for k in cols]
    rows = comparison_rows([r.name for r in have], values, noise)
    caption = f"{what} AP (%)"
    if noise is not None and len(have) > 1:
        caption += f"; best per column in bold and (delta) vs {have[0].name}, beyond {noise:g}"
    blocks: list[Table | Note | Text] = [Table(["run", *cols], rows, caption)]
    note = noise_note(len(have), noise)
    if note is not None:
        blocks.append(note)
    missing = [r.name for r in runs if r not in have]
    if missing:
        names = ", ".join(missing)
        blocks.append(Note(f"{what} metrics for {names}: no eval/metrics_{iou_type}.json"))
    return blocks


def _per_class(run: RunInfo, iou_type: str) -> dict[int, dict[str, Any]]:
    """``{category id: {"name", "group", "AP" in percent or None}}`` of one run's eval file."""
    metrics = run.evals.get(iou_type, {})
    scale = metrics_scale(metrics)
    out = {}
    for rec in metrics.get("per_class") or []:
        if not isinstance(rec, dict) or "id" not in rec:
            continue
        ap = rec.get("AP")
        ok = isinstance(ap, int | float) and math.isfinite(ap) and ap >= 0
        n = rec.get("train_instances")
        out[int(rec["id"])] = {
            "name": str(rec.get("name", rec["id"])),
            "group": str(rec.get("group", "")),
            "AP": float(ap) * scale if ok else None,
            "train_instances": int(n) if isinstance(n, int | float) else None,
        }
    return out


def rarest_order(
    classes: dict[int, dict[str, Any]], instance_counts: dict[int, int] | None
) -> list[int]:
    """Category ids, rarest first: by training instances when known, else by group r < c < f."""
    if instance_counts:
        return sorted(classes, key=lambda c: (instance_counts.get(c, 0), c))
    return sorted(classes, key=lambda c: (GROUP_ORDER.get(classes[c]["group"], 3), c))


def rarest_table(
    runs: list[RunInfo],
    instance_counts: dict[int, int] | None,
    n: int = RAREST_N,
    noise: float | None = None,
) -> list[Table | Note | Text]:
    """AP (box, and mask where any run has it) of the ``n`` rarest classes, one column per run;
    the best of a row is bold only beyond ``noise`` (AP points)."""
    per_run = {t: [(r, _per_class(r, t)) for r in runs] for t in ("bbox", "segm")}
    per_run = {t: [(r, pc) for r, pc in v if pc] for t, v in per_run.items()}
    if not per_run["bbox"] and not per_run["segm"]:
        return [Note("no run has 'per_class' in eval/metrics_bbox.json or metrics_segm.json")]
    classes: dict[int, dict[str, Any]] = {}
    for pairs in per_run.values():
        for _, pc in pairs:
            for cid, rec in pc.items():
                classes.setdefault(cid, rec)
    # training instances: the eval file's own per-class count, else the training json's
    from_eval = {
        c: r["train_instances"] for c, r in classes.items() if r["train_instances"] is not None
    }
    instance_counts = {**(instance_counts or {}), **from_eval} or None
    chosen = rarest_order(classes, instance_counts)[:n]
    header = ["class", "id", "group"] + (["train inst."] if instance_counts else [])
    col_blocks = []  # box columns, then mask columns; "best" is compared inside one block
    for t, pairs in per_run.items():
        header += [f"{IOU_TITLES[t]} AP {r.name}" for r, _ in pairs]
        col_blocks.append([[pc.get(cid, {}).get("AP") for cid in chosen] for _, pc in pairs])
    rows = []
    for i, cid in enumerate(chosen):
        row = [Cell(classes[cid]["name"]), Cell(str(cid)), Cell(classes[cid]["group"] or "?")]
        if instance_counts:
            row.append(Cell(str(instance_counts.get(cid, 0))))
        for columns in col_blocks:
            flags = best_flags([col[i] for col in columns], noise)
            row += [Cell(fmt(col[i]), bold=f) for col, f in zip(columns, flags, strict=True)]
        rows.append(row)
    how = "training instances" if instance_counts else "frequency group (no training counts)"
    caption = f"{len(chosen)} rarest classes by {how}; AP (%)"
    if noise is not None:
        caption += f"; best of each row (box, mask) in bold, beyond {noise:g}"
    blocks: list[Table | Note | Text] = [Table(header, rows, caption, left_columns=3)]
    note = noise_note(max(len(p) for p in per_run.values()), noise)
    return blocks + ([note] if note is not None else [])
