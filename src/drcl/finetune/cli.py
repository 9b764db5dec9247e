"""``drcl finetune CONFIG --work-dir DIR [--init W] [--resume | --overwrite] [key=value ...]``."""

from __future__ import annotations

import argparse
import logging
import math

log = logging.getLogger(__name__)


def cli_finetune(args: argparse.Namespace) -> int:
    """Check the run folder (:func:`drcl.config.run_folder.prepare_run`) and the validation ground
    truth (as ``drcl evaluate`` will), run :func:`drcl.finetune.runner.run_finetune` on its job, log
    the headline APs."""
    from drcl.config.run_folder import prepare_run
    from drcl.evaluation.gt_checks import check_ground_truth
    from drcl.utils.io import read_json

    cfg = prepare_run(
        args.config,
        args.overrides,
        args.work_dir,
        args.resume,
        getattr(args, "overwrite", False),
        inputs={"--init": args.init},
    )
    check_ground_truth(cfg.data.val_ann, "data.val_ann")  # before training, not after it
    from drcl.engine.distributed import get_info
    from drcl.finetune.job import FinetuneJob
    from drcl.finetune.runner import run_finetune  # torch: after the checks, so they are instant

    if getattr(args, "allow_category_mismatch", False):
        cfg.data.allow_category_mismatch = True
    job = FinetuneJob.from_config(cfg, args.work_dir, init=args.init, resume=args.resume)
    run_dir = run_finetune(job)
    if not get_info().is_main:  # rank 0 evaluates and writes the metrics
        return 0
    for iou_type in job.iou_types:
        m = read_json(run_dir.eval_metrics(iou_type))
        keys = ("AP", "AP50", "APr", "APc", "APf")
        log.info("%s: %s", iou_type, "  ".join(f"{k} {_pct(m.get(k))}" for k in keys))
    return 0


def _pct(value: float | None) -> str:
    """A percentage with two decimals; 'n/a' for a group without classes (None / NaN), never 0."""
    if value is None or math.isnan(value):
        return "n/a"
    return f"{100 * value:.2f}"
