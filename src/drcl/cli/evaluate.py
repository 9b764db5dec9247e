"""``drcl evaluate``: LVIS-style metrics of a detections file, or of a checkpoint (via inference).

drcl evaluate --gt val.json --dets dets.json [--iou-type segm] [--train-ann train.json]
              [--out metrics.json]
drcl evaluate --config cfg.yaml --checkpoint model.safetensors [--work-dir DIR] [k=v ...]

A checkpoint needs the detector (``drcl.finetune.runner``) and the metrics
(``drcl.evaluation``), so this handler lives in ``cli/``, above both.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

log = logging.getLogger(__name__)

USAGE_ERROR = 2


def _evaluate_checkpoint(args: argparse.Namespace) -> int:
    """Inference on ``data.val_ann``, then the metrics; written to ``--out`` (default
    ``WORK_DIR/metrics.json``)."""
    from drcl.config import load_config
    from drcl.evaluation.format import format_metrics
    from drcl.evaluation.lvis_eval import json_safe
    from drcl.finetune.runner import evaluate_checkpoint, iou_types_of
    from drcl.utils.io import atomic_write_json, check_output_file

    cfg = load_config(args.config, args.overrides)
    if getattr(args, "allow_category_mismatch", False):
        cfg.data.allow_category_mismatch = True
    for key in ("rare_max", "common_max"):  # --rare-max / --common-max over data.groups
        if getattr(args, key, None) is not None:
            setattr(cfg.data.groups, key, getattr(args, key))
    if args.out:
        check_output_file(args.out)
    work_dir = args.work_dir or str(Path(args.checkpoint).resolve().parent / "eval")
    result = evaluate_checkpoint(cfg, args.checkpoint, work_dir, iou_types_of(cfg))
    if not result:  # ranks other than 0 return {}
        return 0
    for metrics in result.values():
        log.info("%s", format_metrics(metrics))
    out = args.out or str(Path(work_dir) / "metrics.json")
    atomic_write_json(out, json_safe(result), indent=2)
    log.info("metrics written to %s", out)
    return 0


def run_dir_detections(dets: str, iou_type: str) -> str:
    """``--dets``: a file or glob as given; a run folder -> its ``eval/detections_{iou}.json``
    (or ``detections_{iou}.json`` inside an eval folder).

    Raises:
        FileNotFoundError: a folder holding neither (both paths named).
    """
    folder = Path(dets)
    if not folder.is_dir():
        return dets
    name = f"detections_{iou_type}.json"
    for path in (folder / "eval" / name, folder / name):
        if path.is_file():
            log.info("--dets %s: using %s", dets, path)
            return str(path)
    raise FileNotFoundError(
        f"--dets {dets}: a folder without {folder / 'eval' / name} or {folder / name} "
        "(a fine-tuning run folder, or its eval/ folder)"
    )


def cli_evaluate(args: argparse.Namespace) -> int:
    """Handler of ``drcl evaluate``; returns the exit code (2: wrong arguments)."""
    if args.config or args.checkpoint:
        if not (args.config and args.checkpoint):
            log.error("drcl evaluate: error: --config and --checkpoint go together")
            return USAGE_ERROR
        return _evaluate_checkpoint(args)
    if not (args.gt and args.dets):
        log.error("drcl evaluate: error: give --gt and --dets (or --config and --checkpoint)")
        return USAGE_ERROR
    if args.overrides:  # key=value only means something with --config
        log.error(
            "drcl evaluate: error: unrecognized arguments: %s (key=value overrides need "
            "--config and --checkpoint)",
            " ".join(args.overrides),
        )
        return USAGE_ERROR
    from drcl.evaluation.format import format_metrics
    from drcl.evaluation.lvis_eval import evaluate_detections, json_safe
    from drcl.utils.io import atomic_write_json, check_output_file

    if args.out:
        check_output_file(args.out)  # before the (possibly long) evaluation, not after
    # --dets may be a glob of per-rank files ('dets_rank*.json'): they are merged; or a run
    # folder (as `drcl analyze` takes): its eval/detections_<iou_type>.json.
    dets = run_dir_detections(args.dets, args.iou_type)
    metrics = evaluate_detections(
        args.gt,
        dets,
        iou_type=args.iou_type,
        train_ann=args.train_ann,
        max_dets=getattr(args, "max_dets", 300),
        **{
            k: getattr(args, k)
            for k in ("rare_max", "common_max")
            if getattr(args, k, None) is not None
        },
    )
    log.info("%s", format_metrics(metrics))
    if args.out:
        atomic_write_json(args.out, json_safe(metrics), indent=2)
        log.info("metrics written to %s", args.out)
    return 0
