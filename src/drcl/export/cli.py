"""``drcl export CHECKPOINT --to FORMAT --out FILE``: parse arguments, convert, save."""

from __future__ import annotations

import argparse
import logging

log = logging.getLogger(__name__)


def cli_export(args: argparse.Namespace) -> int:
    """``drcl export CHECKPOINT --to {torchvision,detectron2,mmdet} --out FILE
    [--for {two-stage,one-stage}]``."""
    from drcl.export.convert import _read_state, export_format, export_state, save_exported
    from drcl.utils.io import check_output_file

    export_format(args.out)  # a wrong suffix or an unwritable path fails before any reading
    check_output_file(args.out, inputs={"CHECKPOINT": args.checkpoint})
    state = _read_state(args.checkpoint)
    result = export_state(state, args.to, getattr(args, "arch", None))
    if not result.state:
        raise ValueError(f"{args.checkpoint}: no key could be mapped to {args.to}")
    save_exported(result.state, args.to, args.out)
    log.info(f"exported {len(result.state)} tensors ({args.to} layout) to {args.out}")
    buffers = [k for k in result.dropped if k.endswith("num_batches_tracked")]
    if buffers:
        log.info(f"dropped {len(buffers)} num_batches_tracked buffers (not used by {args.to})")
    p2 = [k for k in result.dropped if k not in buffers]
    if p2:
        log.info(f"left out {len(p2)} P2 FPN tensors (a one-stage FPN starts at C3): {p2[0]} ...")
    if result.unmapped:
        shown = ", ".join(result.unmapped[:20])
        more = f" ... (+{len(result.unmapped) - 20})" if len(result.unmapped) > 20 else ""
        n = len(result.unmapped)
        log.info(f"not exported ({n} keys without a {args.to} rule): {shown}{more}")
    for warning in result.warnings:
        log.warning(f"warning: {warning}")
    return 0
