"""``drcl proposals CONFIG --out P.json``: boxes to pre-train on (gt, file or detector)."""

from __future__ import annotations

import argparse


def cli_proposals(args: argparse.Namespace) -> int:
    """Load the config and run :func:`drcl.proposals.runner.run_proposals` on its job."""
    from omegaconf import OmegaConf

    from drcl.config import load_config
    from drcl.proposals.job import ProposalsJob
    from drcl.proposals.runner import run_proposals
    from drcl.utils.io import check_output_file

    cfg = load_config(args.config, args.overrides)
    inputs = {"CONFIG": args.config, "pretrain.proposals.file": cfg.pretrain.proposals.file}
    for key in ("train_ann", "val_ann"):
        inputs[f"data.{key}"] = None if OmegaConf.is_missing(cfg.data, key) else cfg.data[key]
    check_output_file(args.out, inputs=inputs)  # before the (possibly long) detector run
    job = ProposalsJob.from_config(cfg, args.out, getattr(args, "clean_detector", False))
    run_proposals(job)
    return 0
