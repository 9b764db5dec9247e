"""``drcl proposals CONFIG --out P.json``: boxes to pre-train on (gt, file or detector)."""

from __future__ import annotations

import argparse


def cli_proposals(args: argparse.Namespace) -> int:
    """Load the config and run :func:`drcl.proposals.runner.run_proposals`."""
    from drcl.config import load_config
    from drcl.proposals.runner import run_proposals
    from drcl.utils.io import check_output_file

    cfg = load_config(args.config, args.overrides)
    check_output_file(args.out)  # before the (possibly long) detector run
    run_proposals(cfg, args.out, clean_detector=getattr(args, "clean_detector", False))
    return 0
