"""The metrics of :func:`~drcl.evaluation.lvis_eval.evaluate_detections` as a readable table."""

from __future__ import annotations

import math
from typing import Any

from drcl.evaluation.groups import EVAL_FILE_COUNTS


def _pct(value: float | None) -> str:
    """AP fraction as a percentage with one decimal; 'n/a' for NaN/None (a group without
    classes with ground truth has no AP: it is not 0)."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    return f"{100 * value:.1f}"


def _row(keys: list[str], metrics: dict[str, Any]) -> list[str]:
    head = "  ".join(f"{k:>6}" for k in keys)
    vals = "  ".join(f"{_pct(metrics.get(k)):>6}" for k in keys)
    return [head, vals]


def _rarest(per_class: list[dict[str, Any]], n: int = 10) -> tuple[list[dict[str, Any]], str]:
    """The ``n`` classes with ground truth and the fewest training instances (or images)."""
    scored = [c for c in per_class if not math.isnan(c["AP"])]
    for key in ("train_instances", "train_images"):
        if scored and all(c[key] is not None for c in scored):
            return sorted(scored, key=lambda c: (c[key], c["id"]))[:n], key
    group_order = {"r": 0, "c": 1, "f": 2, None: 3}
    return sorted(scored, key=lambda c: (group_order[c["group"]], c["id"]))[:n], "group"


def format_metrics(metrics: dict[str, Any]) -> str:
    """A readable table: overall AP, per area, per group (and COCO-LT bin), 10 rarest classes."""
    per_class = metrics["per_class"]
    counts = {g: sum(c["group"] == g for c in per_class) for g in ("r", "c", "f")}
    lines = [
        f"{metrics['iou_type']} AP ({metrics['rules']} rules, maxDets={metrics['max_dets']}, "
        f"{metrics['num_images']} images, {metrics['num_detections']} detections evaluated)",
        *_row(["AP", "AP50", "AP75", "APs", "APm", "APl"], metrics),
    ]
    lines += [f"note: {n}" for n in metrics.get("notes", [])]
    if metrics["groups_source"]:
        lines.append(
            f"frequency groups (from {metrics['groups_source']}; classes "
            f"r/c/f = {counts['r']}/{counts['c']}/{counts['f']})"
        )
        lines += _row(["APr", "APc", "APf"], metrics)
    else:
        lines.append("frequency groups: unavailable (APr/APc/APf not computed)")
    eval_counts = metrics["bins_source"] == "instance_count"
    label = EVAL_FILE_COUNTS if eval_counts else "training instances"
    if "AP1" in metrics:
        lines.append(f"COCO-LT bins by {label} (from {metrics['bins_source']})")
        lines += _row(["AP1", "AP2", "AP3", "AP4"], metrics)
    rarest, key = _rarest(per_class)
    by = key.replace("_", " ") if not eval_counts or key == "group" else label
    lines.append(f"rarest classes (by {by}):")
    lines.append(f"{'id':>6}  {'name':<24} {'group':>5} {'count':>8} {'AP':>6}")
    for c in rarest:
        count = c.get(key) if key != "group" else None
        lines.append(
            f"{c['id']:>6}  {c['name'][:24]:<24} {c['group'] or '-':>5} "
            f"{'-' if count is None else count:>8} {_pct(c['AP']):>6}"
        )
    return "\n".join(lines)
