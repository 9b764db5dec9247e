"""``drcl report [NAME=]RUN_DIR... --out DIR``: parse arguments, build the report."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

log = logging.getLogger(__name__)


def cli_report(args: argparse.Namespace) -> int:
    """``drcl report [NAME=]RUN_DIR... [--ablation DIR] --out DIR [--gt JSON] [--train-ann F]``."""
    from drcl.report.build import build_report
    from drcl.report.runs import parse_run_spec
    from drcl.utils.io import refuse_overwriting_inputs

    runs: dict[str, Path] = {}
    for spec in args.runs:
        name, path = parse_run_spec(spec)
        if name in runs:
            raise ValueError(f"run name '{name}' given twice; rename one with NAME=DIR")
        runs[name] = path
    gt, train_ann = getattr(args, "gt", None), getattr(args, "train_ann", None)
    ablation = getattr(args, "ablation", None)
    if not runs and ablation is None:
        raise ValueError("no runs given (and no --ablation)")
    inputs = {**{f"run {n}": p for n, p in runs.items()}, "--gt": gt, "--train-ann": train_ann}
    refuse_overwriting_inputs(args.out, {**inputs, "--ablation": ablation}, "--out", folder=True)
    out = build_report(
        runs,
        args.out,
        gt=gt,
        train_ann=train_ann,
        ablation=ablation,
        seed_noise=getattr(args, "seed_noise", None),
    )
    log.info(f"report written to {out / 'index.html'} and {out / 'README.md'}")
    return 0
