"""Tables of the report: metrics side by side (best in bold, deltas vs the first run) and the AP
of the rarest classes."""

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


def best_flags(values: list[float | None]) -> list[bool]:
    """True where a value equals the column maximum at the shown precision (ties all bold)."""
    shown = [None if v is None else round(v, DECIMALS) for v in values]
    known = [v for v in shown if v is not None]
    if not known:
        return [False] * len(values)
    top = max(known)
    return [v is not None and math.isclose(v, top) for v in shown]


def comparison_rows(names: list[str], columns: list[list[float | None]]) -> list[list[Cell]]:
    """Rows ``[name, v_1, ..., v_K]``: best per column bold; rows after the first show deltas.

    Args:
        names: R row labels (runs).
        columns: K columns, each R values (None = unknown).
    """
    flags = [best_flags(col) for col in columns]
    rows = []
    for r, name in enumerate(names):
        row = [Cell(name)]
        for k, col in enumerate(columns):
            delta = fmt_delta(col[r], col[0]) if r > 0 else ""
            row.append(Cell(fmt(col[r]), bold=flags[k][r], delta=delta))
        rows.append(row)
    return rows


def metrics_table(runs: list[RunInfo], iou_type: str) -> list[Table | Note | Text]:
    """The box (``bbox``) or mask (``segm``) metrics of every run that has them."""
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
    rows = comparison_rows([r.name for r in have], values)
    caption = f"{what} AP (%); best per column in bold; (delta) vs {have[0].name}"
    blocks: list[Table | Note | Text] = [Table(["run", *cols], rows, caption)]
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
    runs: list[RunInfo], instance_counts: dict[int, int] | None, n: int = RAREST_N
) -> list[Table | Note | Text]:
    """AP (box, and mask where any run has it) of the ``n`` rarest classes, one column per run."""
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
            flags = best_flags([col[i] for col in columns])
            row += [Cell(fmt(col[i]), bold=f) for col, f in zip(columns, flags, strict=True)]
        rows.append(row)
    how = "training instances" if instance_counts else "frequency group (no training counts)"
    caption = f"{len(chosen)} rarest classes by {how}; AP (%); best of each row (box, mask) in bold"
    return [Table(header, rows, caption, left_columns=3)]
