"""``drcl ablate``: the paper's ablation grid (HCL, LCL, DRB, AR, SR on and off), K seeds per row.

The work is in :mod:`drcl.ablation` (rows, the fair protocol, statistics, the runner).
"""

from __future__ import annotations

import argparse
import logging

log = logging.getLogger(__name__)


def cli_ablate(args: argparse.Namespace) -> int:
    from drcl.ablation.runner import run_ablation

    out = run_ablation(args.config, args.work_dir, args.overrides, seeds=args.seeds)
    log.info("ablation results: %s (table: %s)", out, out.with_name("ablation.md"))
    return 0
