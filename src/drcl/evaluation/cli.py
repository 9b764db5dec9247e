"""``drcl evaluate``: LVIS-style metrics of a detections file, or of a checkpoint (via inference).

drcl evaluate --gt val.json --dets dets.json [--iou-type segm] [--train-ann train.json]
              [--out metrics.json]
drcl evaluate --config cfg.yaml --checkpoint model.safetensors [--work-dir DIR] [k=v ...]
"""

from __future__ import annotations

import argparse
import importlib
import math
import sys
from pathlib import Path
from typing import Any

from drcl.evaluation.lvis_eval import evaluate_detections, json_safe
from drcl.utils.io import atomic_write_json

NOT_IMPLEMENTED = 3
USAGE_ERROR = 2


def _pct(value: float | None) -> str:
    """AP fraction as a percentage with one decimal; '-' for NaN/None."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
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
        f"frequency groups (from {metrics['groups_source'] or 'nowhere: unknown'}; classes "
        f"r/c/f = {counts['r']}/{counts['c']}/{counts['f']})",
        *_row(["APr", "APc", "APf"], metrics),
    ]
    if "AP1" in metrics:
        lines.append(f"COCO-LT bins by training instances (from {metrics['bins_source']})")
        lines += _row(["AP1", "AP2", "AP3", "AP4"], metrics)
    rarest, key = _rarest(per_class)
    lines.append(f"rarest classes (by {key.replace('_', ' ')}):")
    lines.append(f"{'id':>6}  {'name':<24} {'group':>5} {'count':>8} {'AP':>6}")
    for c in rarest:
        count = c.get(key) if key != "group" else None
        lines.append(
            f"{c['id']:>6}  {c['name'][:24]:<24} {c['group'] or '-':>5} "
            f"{'-' if count is None else count:>8} {_pct(c['AP']):>6}"
        )
    return "\n".join(lines)


def _evaluate_checkpoint(args: argparse.Namespace) -> int:
    """Delegate to the detection package: inference on data.val_ann, then these metrics.

    ``evaluate_checkpoint`` returns ``{iou_type: metrics}``; they are printed and written to
    ``--out`` (default ``WORK_DIR/metrics.json``).
    """
    from drcl.config import load_config

    name = "drcl.detection.inference"
    try:
        evaluate_checkpoint = importlib.import_module(name).evaluate_checkpoint
    except (ModuleNotFoundError, AttributeError) as err:
        if isinstance(err, ModuleNotFoundError) and err.name != name:
            raise  # a missing dependency inside the module is a real error
        print("drcl evaluate --checkpoint: not implemented yet", file=sys.stderr)
        return NOT_IMPLEMENTED
    cfg = load_config(args.config, args.overrides)
    iou_types = ["bbox", "segm"] if cfg.finetune.arch == "mask_rcnn" else ["bbox"]
    work_dir = args.work_dir or str(Path(args.checkpoint).resolve().parent / "eval")
    result = evaluate_checkpoint(cfg, args.checkpoint, work_dir, iou_types)
    if not result:  # ranks other than 0 return {}
        return 0
    for metrics in result.values():
        if isinstance(metrics, dict) and "per_class" in metrics:
            print(format_metrics(metrics))
    out = args.out or str(Path(work_dir) / "metrics.json")
    atomic_write_json(out, json_safe(result), indent=2)
    print(f"metrics written to {out}")
    return 0


def cli_evaluate(args: argparse.Namespace) -> int:
    """Handler of ``drcl evaluate``; returns the exit code (2: wrong arguments)."""
    if args.config or args.checkpoint:
        if not (args.config and args.checkpoint):
            print("drcl evaluate: --config and --checkpoint go together", file=sys.stderr)
            return USAGE_ERROR
        return _evaluate_checkpoint(args)
    if not (args.gt and args.dets):
        print("drcl evaluate: give --gt and --dets (or --config and --checkpoint)", file=sys.stderr)
        return USAGE_ERROR
    # --dets may be a glob of per-rank files ('dets_rank*.json'): they are merged.
    metrics = evaluate_detections(
        args.gt, args.dets, iou_type=args.iou_type, train_ann=args.train_ann
    )
    print(format_metrics(metrics))
    if args.out:
        atomic_write_json(args.out, json_safe(metrics), indent=2)
        print(f"metrics written to {args.out}")
    return 0
