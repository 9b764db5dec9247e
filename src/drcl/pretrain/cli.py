"""``drcl pretrain CONFIG --work-dir DIR [--resume] [key=value ...]``."""

from __future__ import annotations

import argparse
import logging

log = logging.getLogger(__name__)


def cli_pretrain(args: argparse.Namespace) -> int:
    """Load the config and run :func:`drcl.pretrain.runner.run_pretrain`."""
    from drcl.config import load_config
    from drcl.pretrain.runner import run_pretrain

    out = run_pretrain(load_config(args.config, args.overrides), args.work_dir, args.resume)
    log.info("pre-trained weights: %s", out)
    return 0
