"""The ``drcl`` command line: one entry point, one subcommand per pipeline stage.

Each subcommand names a handler ``"module:function"`` taking the parsed arguments and returning
an exit code; modules are imported only when their command runs, so ``--help`` stays instant.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Callable

NOT_IMPLEMENTED = 3


def _add_config_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("config", help="YAML config (with optional _base_ inheritance)")
    p.add_argument("overrides", nargs="*", help="key.sub=value overrides, e.g. train.lr=0.01")


def _data_parsers(sub: argparse._SubParsersAction) -> None:
    data = sub.add_parser("data", help="check, describe and generate datasets")
    dsub = data.add_subparsers(
        dest="data_command", required=True, metavar="{check,stats,make-demo}"
    )

    p = dsub.add_parser(
        "check", help="validate a COCO/LVIS json and its images; exit 1 on problems"
    )
    p.add_argument("ann", help="annotation json")
    p.add_argument("--images", help="image folder (file_name is relative to it)")
    p.add_argument(
        "--fix-out", help="write a cleaned copy here (drops what cannot be repaired, clips boxes)"
    )
    p.add_argument("--max-print", type=int, default=200, help="problems to print (all are counted)")
    p.set_defaults(handler="drcl.data.check:cli_check")

    p = dsub.add_parser("stats", help="counts per frequency group and the long-tail curve")
    p.add_argument("ann", help="training annotation json")
    p.add_argument("--out", default=None, help="PNG path for the long-tail curve")
    p.set_defaults(handler="drcl.data.stats:cli_stats")

    p = dsub.add_parser("make-demo", help="generate the embedded long-tailed demo dataset")
    p.add_argument("out_dir")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--size", choices=["small", "medium"], default="small")
    p.set_defaults(handler="drcl.data.demo:cli_make_demo")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="drcl", description="Long-tailed detection pre-training with 2DRCL."
    )
    sub = parser.add_subparsers(dest="command", required=True)
    _data_parsers(sub)

    p = sub.add_parser("evaluate", help="LVIS-style AP/APr/APc/APf (and COCO-LT AP1..AP4)")
    p.add_argument("--gt", help="ground-truth json (LVIS or COCO format)")
    p.add_argument("--dets", help="detections, COCO results format json")
    p.add_argument("--iou-type", choices=["bbox", "segm"], default="bbox")
    p.add_argument("--train-ann", help="training json for frequency groups and COCO-LT bins")
    p.add_argument("--config", help="run config (with --checkpoint: run inference first)")
    p.add_argument("--checkpoint", help="detector checkpoint to evaluate on data.val_ann")
    p.add_argument("--work-dir", default=None, help="where detections and metrics go")
    p.add_argument("--out", help="metrics json")
    p.add_argument("overrides", nargs="*", help="key.sub=value config overrides")
    p.set_defaults(handler="drcl.evaluation.cli:cli_evaluate")

    p = sub.add_parser(
        "proposals", help="boxes to pre-train on: gt, file or class-agnostic detector"
    )
    _add_config_args(p)
    p.add_argument("--out", required=True, help="proposals json")
    p.set_defaults(handler="drcl.proposals.cli:cli_proposals")

    p = sub.add_parser("pretrain", help="2DRCL pre-training")
    _add_config_args(p)
    p.add_argument("--work-dir", required=True)
    p.add_argument("--resume", action="store_true", help="continue from the latest good checkpoint")
    p.set_defaults(handler="drcl.engine.pretrain:cli_pretrain")

    p = sub.add_parser("finetune", help="fine-tune Faster / Mask R-CNN")
    _add_config_args(p)
    p.add_argument("--work-dir", required=True)
    p.add_argument("--init", help="pre-trained weights (safetensors)")
    p.add_argument("--resume", action="store_true")
    p.set_defaults(handler="drcl.detection.cli:cli_finetune")

    p = sub.add_parser("analyze", help="error breakdown, classifier weight norms, attention maps")
    p.add_argument("what", choices=["errors", "weight-norms", "attention"])
    p.add_argument("rest", nargs=argparse.REMAINDER)
    p.set_defaults(handler="drcl.analysis.cli:cli_analyze")

    p = sub.add_parser("report", help="one folder with tables and plots comparing runs")
    p.add_argument("runs", nargs="+", help="run dirs, optionally NAME=DIR")
    p.add_argument("--out", required=True)
    p.add_argument("--gt", help="validation json (default: data.val_ann of the runs' config)")
    p.add_argument("--train-ann", help="training json (default: data.train_ann of the config)")
    p.set_defaults(handler="drcl.report.build:cli_report")

    p = sub.add_parser("export", help="convert weights for torchvision / detectron2 / mmdetection")
    p.add_argument("checkpoint")
    p.add_argument("--to", choices=["torchvision", "detectron2", "mmdet"], required=True)
    p.add_argument("--out", required=True)
    p.set_defaults(handler="drcl.export.convert:cli_export")

    p = sub.add_parser("demo", help="the whole pipeline on the embedded dataset, on CPU")
    p.add_argument("--work-dir", default="work/demo")
    p.set_defaults(handler="drcl.cli.demo:cli_demo")

    p = sub.add_parser("ablate", help="the paper's ablation grid (HCL, LCL, DRB, AR, SR)")
    _add_config_args(p)
    p.add_argument("--work-dir", required=True)
    p.set_defaults(handler="drcl.cli.ablate:cli_ablate")
    return parser


def _resolve(handler: str) -> Callable[[argparse.Namespace], int] | None:
    module_name, func_name = handler.split(":")
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as err:
        if err.name == module_name:
            return None
        raise
    return getattr(module, func_name, None)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    # overrides may come after options (`--work-dir D train.lr=0.1`): collect leftovers
    args, extra = parser.parse_known_args(argv)
    if extra:
        if not hasattr(args, "overrides") or any(e.startswith("-") or "=" not in e for e in extra):
            parser.error(f"unrecognized arguments: {' '.join(extra)}")
        args.overrides = [*args.overrides, *extra]
    func = _resolve(args.handler)
    if func is None:
        print(f"drcl {args.command}: not implemented yet", file=sys.stderr)
        return NOT_IMPLEMENTED
    from drcl.config import ConfigError

    try:
        return int(func(args) or 0)
    except (ConfigError, FileNotFoundError, ValueError, FloatingPointError) as err:
        # User-facing errors (bad config, bad data, missing files): one clear line, exit 1.
        print(f"drcl {args.command}: error: {user_message(err)}", file=sys.stderr)
        return 1


def user_message(err: BaseException) -> str:
    """The message of ``err``; for an error re-raised from a DataLoader worker (which carries
    the worker's whole traceback), only its last line, the original error."""
    text = str(err)
    if "Original Traceback" in text:
        last = [line for line in text.splitlines() if line.strip()][-1]
        return last.split(": ", 1)[-1] if ": " in last else last
    return text


if __name__ == "__main__":
    sys.exit(main())
