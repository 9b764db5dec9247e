"""``drcl evaluate``: LVIS-style metrics of a detections file, or of a checkpoint (via inference).

drcl evaluate --gt val.json --dets dets.json [--iou-type segm] [--train-ann train.json]
              [--out metrics.json]
drcl evaluate --config cfg.yaml --checkpoint model.safetensors [--work-dir DIR] [k=v ...]

Outputs are checked before any work: ``--out`` must not be an input and must end in ``.json``;
the ground truth gets ``drcl data check``'s checks (``evaluation/gt_checks.py``); a checkpoint's
metrics go to ``RUN/eval-<split>``, never over the run's own ``eval/``.

A checkpoint needs the detector (``drcl.finetune.runner``) and the metrics
(``drcl.evaluation``), so this handler lives in ``cli/``, above both.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from drcl.utils.run_dir import RunDir, detections_name

log = logging.getLogger(__name__)

USAGE_ERROR = 2


def eval_dir_of(val_ann: str, checkpoint: str) -> Path:
    """The default folder of ``drcl evaluate --checkpoint``: ``RUN/eval-<split>`` next to the
    checkpoint, named after ``data.val_ann`` (``eval-val``, ``eval-train``), never the run's own
    ``eval/`` (written by ``drcl finetune``, read by ``drcl report`` as the val split's)."""
    return Path(checkpoint).resolve().parent / f"eval-{Path(val_ann).stem}"


def _refuse_run_eval_dir(work_dir: str, checkpoint: str) -> None:
    run = Path(checkpoint).resolve().parent
    own = RunDir(run).eval_dir
    if RunDir(run).config.is_file() and Path(work_dir).resolve() == own.resolve():
        from drcl.utils.errors import OutputOverInputError

        raise OutputOverInputError(
            f"--work-dir {work_dir} is the run's own evaluation (drcl finetune wrote it, drcl "
            "report reads it); refusing to replace it",
            hint="leave --work-dir out (default: RUN/eval-<split of data.val_ann>) or give "
            "another folder",
        )


def _evaluate_checkpoint(args: argparse.Namespace) -> int:
    """Inference on ``data.val_ann``, then the metrics; written to ``--out`` (default
    ``WORK_DIR/metrics.json``; ``WORK_DIR`` defaults to :func:`eval_dir_of`)."""
    from drcl.config import load_config
    from drcl.evaluation.format import format_metrics
    from drcl.evaluation.gt_checks import check_ground_truth
    from drcl.evaluation.lvis_eval import json_safe
    from drcl.finetune.job import EvaluateJob
    from drcl.finetune.runner import evaluate_checkpoint
    from drcl.utils.io import atomic_write_json, check_output_dir, check_output_file

    cfg = load_config(args.config, args.overrides)
    if getattr(args, "allow_category_mismatch", False):
        cfg.data.allow_category_mismatch = True
    for key in ("rare_max", "common_max"):  # --rare-max / --common-max over data.groups
        if getattr(args, key, None) is not None:
            setattr(cfg.data.groups, key, getattr(args, key))
    from omegaconf import OmegaConf

    val_ann = None if OmegaConf.is_missing(cfg.data, "val_ann") else cfg.data.val_ann
    train_ann = None if OmegaConf.is_missing(cfg.data, "train_ann") else cfg.data.train_ann
    inputs = {
        "--config": args.config,
        "--checkpoint": args.checkpoint,
        "data.val_ann": val_ann,
        "data.train_ann": train_ann,
    }
    if args.out:
        check_output_file(args.out, inputs=inputs, suffixes=(".json",))
    work_dir = args.work_dir or str(eval_dir_of(val_ann or "val", args.checkpoint))
    _refuse_run_eval_dir(work_dir, args.checkpoint)
    check_output_dir(work_dir, "--work-dir", inputs=inputs)
    if val_ann is not None:  # (unset: EvaluateJob.from_config says data.val_ann is required)
        check_ground_truth(val_ann, "data.val_ann")
    result = evaluate_checkpoint(EvaluateJob.from_config(cfg, args.checkpoint, work_dir))
    if not result:  # ranks other than 0 return {}
        return 0
    for metrics in result.values():
        log.info("%s", format_metrics(metrics))
    out = args.out or str(Path(work_dir) / "metrics.json")
    atomic_write_json(out, json_safe(result), indent=2)
    log.info("metrics of %s on %s written to %s", args.checkpoint, val_ann, out)
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
    name = detections_name(iou_type)
    for path in (RunDir(folder).eval_dir / name, folder / name):
        if path.is_file():
            log.info("--dets %s: using %s", dets, path)
            return str(path)
    raise FileNotFoundError(
        f"--dets {dets}: a folder without {RunDir(folder).eval_dir / name} or {folder / name} "
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
    from drcl.evaluation.gt_checks import check_ground_truth
    from drcl.evaluation.lvis_eval import evaluate_detections, json_safe
    from drcl.utils.io import atomic_write_json, check_output_file

    inputs = {"--gt": args.gt, "--dets": args.dets, "--train-ann": args.train_ann}
    if args.out:  # before the (possibly long) evaluation, not after
        check_output_file(args.out, inputs=inputs, suffixes=(".json",))
    check_ground_truth(args.gt, "--gt")
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
