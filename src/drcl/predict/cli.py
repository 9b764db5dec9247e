"""``drcl predict`` and ``drcl test``: handlers (the runner is imported inside, ``--help`` stays
instant).

drcl predict CKPT (--images DIR | --ann FILE --images DIR) --out OUT.json [--draw DIR]
             [--score-thr T] [--max-dets 300] [--device D] [--batch-size B] [k=v ...]
drcl test CKPT --gt ANN.json --images DIR [--train-ann T] [--out DIR] [k=v ...]
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from drcl.utils.run_dir import detections_name

log = logging.getLogger(__name__)


def add_predict_args(p: argparse.ArgumentParser) -> None:
    """The options ``predict`` and ``test`` share."""
    p.add_argument("checkpoint", help="fine-tuning run folder, or its model_final.safetensors")
    p.add_argument("--config", help="the run's config.yaml (default: the one beside CKPT)")
    p.add_argument(
        "--score-thr",
        type=float,
        default=None,
        help="lowest detection score kept (default: the run's finetune.score_thresh, LVIS 1e-4)",
    )
    p.add_argument(
        "--max-dets", type=int, default=300, help="detections per image (LVIS: 300, the default)"
    )
    p.add_argument("--device", help="cpu, cuda or auto (default: the run's train.device)")
    p.add_argument(
        "--batch-size", type=int, help="images per forward pass (default: finetune.eval_batch_size)"
    )
    p.add_argument(
        "--allow-category-mismatch",
        action="store_true",
        help="evaluate/write ids whose name differs from the model's training file (by id)",
    )
    p.add_argument("overrides", nargs="*", help="key.sub=value overrides of the run's config")


def _job(args: argparse.Namespace, items, out: Path, ann=None, draw_dir=None, draw_thr=None):
    from drcl.predict.runner import PredictJob, load_run_config

    extra = ["data.allow_category_mismatch=true"] if args.allow_category_mismatch else []
    cfg = load_run_config(args.checkpoint_info, [*args.overrides, *extra])
    return PredictJob.from_config(
        cfg,
        args.checkpoint_info,
        items,
        out,
        score_thr=args.score_thr,
        max_dets=args.max_dets,
        batch_size=args.batch_size,
        device=args.device,
        draw_dir=draw_dir,
        draw_thr=draw_thr,
        ann=ann,
    )


def _check_numbers(args: argparse.Namespace) -> None:
    if args.max_dets < 1:
        raise ValueError(f"--max-dets must be >= 1, got {args.max_dets}")
    if args.batch_size is not None and args.batch_size < 1:
        raise ValueError(f"--batch-size must be >= 1, got {args.batch_size}")
    if args.score_thr is not None and not 0 <= args.score_thr <= 1:
        raise ValueError(f"--score-thr must be in [0, 1], got {args.score_thr}")


def _summary(result, what: str) -> int:
    """Log images/s and detections; an error line and exit code 1 when images were skipped."""
    log.info(
        "%s: %d images in %.1f s (%.2f images/s), %d detections -> %s",
        what,
        result.num_images,
        result.seconds,
        result.images_per_s,
        result.num_detections,
        result.out,
    )
    if result.failures:
        total = result.num_images + len(result.failures)
        names = ", ".join(f.file_name for f in result.failures[:5])
        more = "" if len(result.failures) <= 5 else f" and {len(result.failures) - 5} more"
        log.error(
            "drcl %s: error: %d of %d images could not be read (%s%s); they were skipped",
            what,
            len(result.failures),
            total,
            names,
            more,
        )
        return 1
    return 0


def cli_predict(args: argparse.Namespace) -> int:
    """Handler of ``drcl predict``: results json (+ drawings); exit 1 when an image failed."""
    from drcl.predict.images import images_in_folder, images_of_annotation
    from drcl.predict.runner import check_outputs, resolve_checkpoint, run_predict

    _check_numbers(args)
    if args.images is None:
        raise ValueError("give --images DIR (with --ann FILE: the folder its file_names are in)")
    args.checkpoint_info = resolve_checkpoint(args.checkpoint, args.config)
    if args.ann:
        items = images_of_annotation(args.ann, args.images)
    else:
        items = images_in_folder(args.images)
    job = _job(args, items, Path(args.out), args.ann, args.draw, args.draw_score_thr)
    ckpt = args.checkpoint_info
    inputs = {"checkpoint": ckpt.weights, "config": ckpt.config, "--ann": args.ann}
    check_outputs(job, inputs, images_root=None if args.ann else Path(args.images))
    result = run_predict(job)
    if job.draw_dir is not None:
        log.info("drawings (score >= %g) in %s", job.draw_thr, job.draw_dir)
    return _summary(result, "predict")


def cli_test(args: argparse.Namespace) -> int:
    """Handler of ``drcl test``: predict on ``--gt``'s images, then the LVIS metrics, written as
    fine-tuning's evaluation writes them (``detections_bbox.json``, ``metrics_*.json``)."""
    from drcl.evaluation.format import format_metrics
    from drcl.evaluation.gt_checks import check_ground_truth
    from drcl.predict.images import images_of_annotation
    from drcl.predict.runner import (
        check_outputs,
        check_test_dir,
        default_test_dir,
        evaluate_predictions,
        resolve_checkpoint,
        run_predict,
    )

    _check_numbers(args)
    ckpt = args.checkpoint_info = resolve_checkpoint(args.checkpoint, args.config)
    check_ground_truth(args.gt, "--gt")  # as drcl evaluate: before the (long) inference
    items = images_of_annotation(args.gt, args.images)
    out_dir = check_test_dir(Path(args.out or default_test_dir(ckpt, args.gt)), ckpt)
    job = _job(args, items, out_dir / detections_name("bbox"), args.gt)
    check_outputs(job, {"checkpoint": ckpt.weights, "config": ckpt.config, "--gt": args.gt})
    train_ann = args.train_ann or _existing(job.cfg.data.train_ann)
    result = run_predict(job)
    code = _summary(result, "test")
    if code:
        log.error("drcl test: error: metrics not written: the skipped images would count as empty")
        return code
    metrics = evaluate_predictions(job, args.gt, train_ann, out_dir)
    for m in metrics.values():
        log.info("%s", format_metrics(m))
    files = ", ".join(str(out_dir / f"metrics_{t}.json") for t in metrics)
    log.info("metrics written to %s", files)
    return 0


def _existing(path: str | None) -> str | None:
    return path if path and Path(path).is_file() else None
