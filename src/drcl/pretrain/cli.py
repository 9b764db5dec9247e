"""``drcl pretrain CONFIG --work-dir DIR [--resume | --overwrite] [key=value ...]``."""

from __future__ import annotations

import argparse
import logging

log = logging.getLogger(__name__)


def cli_pretrain(args: argparse.Namespace) -> int:
    """Check the run folder (:func:`drcl.config.run_folder.prepare_run`: a folder holding another
    run is refused, ``--resume`` keeps the run's config), then run
    :func:`drcl.pretrain.runner.run_pretrain`."""
    from drcl.config.run_folder import prepare_run

    cfg = prepare_run(
        args.config, args.overrides, args.work_dir, args.resume, getattr(args, "overwrite", False)
    )
    from drcl.pretrain.job import PretrainJob  # torch: after the checks, so they are instant
    from drcl.pretrain.runner import run_pretrain

    out = run_pretrain(PretrainJob.from_config(cfg, args.work_dir, resume=args.resume))
    log.info("pre-trained weights: %s", out)
    return 0
