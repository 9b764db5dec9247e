"""The ``drcl`` command line: one entry point, one subcommand per pipeline stage.

Each subcommand's handler is a function imported from its stage's ``cli`` module, taking the
parsed arguments and returning an exit code. Those modules are light (they import their runner
inside the handler), so ``--help`` stays instant, and a renamed handler fails at import.

Output goes through :mod:`logging`, configured here: rank 0 prints INFO (``--verbose``: DEBUG,
``--quiet``: warnings only) to stdout, warnings and errors to stderr; other ranks print errors.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pickle import UnpicklingError

from drcl.analysis.cli import cli_analyze
from drcl.cli.ablate import cli_ablate
from drcl.cli.demo import cli_demo
from drcl.cli.evaluate import cli_evaluate
from drcl.data.cli import cli_check, cli_make_demo, cli_stats
from drcl.export.cli import cli_export
from drcl.finetune.cli import cli_finetune
from drcl.generic.cli import cli_make_generic, cli_pretrain_generic
from drcl.generic.recipe import GenericRecipe
from drcl.pretrain.cli import cli_pretrain
from drcl.proposals.cli import cli_proposals
from drcl.report.cli import cli_report

log = logging.getLogger("drcl")
SIGPIPE_EXIT = 141  # 128 + SIGPIPE


def _add_config_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("config", help="YAML config (with optional _base_ inheritance)")
    p.add_argument("overrides", nargs="*", help="key.sub=value overrides, e.g. train.lr=0.01")


def _data_parsers(sub: argparse._SubParsersAction) -> None:
    data = sub.add_parser("data", help="check, describe and generate datasets")
    dsub = data.add_subparsers(
        dest="data_command", required=True, metavar="{check,stats,make-demo,make-generic}"
    )

    p = dsub.add_parser(
        "check", help="validate a COCO/LVIS json and its images; exit 1 on problems"
    )
    p.add_argument("ann", help="annotation json")
    p.add_argument(
        "--images",
        help="image root: file_name is relative to it, or for LVIS v1 (coco_url) the COCO root "
        "holding train2017/ and val2017/",
    )
    p.add_argument(
        "--fix-out", help="write a cleaned copy here (drops what cannot be repaired, clips boxes)"
    )
    p.add_argument("--max-print", type=int, default=200, help="problems to print (all are counted)")
    p.set_defaults(handler=cli_check)

    p = dsub.add_parser("stats", help="counts per frequency group and the long-tail curve")
    p.add_argument("ann", help="training annotation json")
    p.add_argument("--out", default=None, help="PNG path for the long-tail curve")
    p.set_defaults(handler=cli_stats)

    p = dsub.add_parser("make-demo", help="generate the embedded long-tailed demo dataset")
    p.add_argument("out_dir", help="folder to create (train/val json and images)")
    p.add_argument("--seed", type=int, default=0, help="random seed (same seed, same dataset)")
    p.add_argument(
        "--size", choices=["small", "medium"], default="small", help="dataset size preset"
    )
    p.set_defaults(handler=cli_make_demo)

    p = dsub.add_parser(
        "make-generic", help="generate the class-balanced classification set (generic backbone)"
    )
    _generic_data_args(p, positional=True)
    p.set_defaults(handler=cli_make_generic)


def _generic_data_args(p: argparse.ArgumentParser, positional: bool) -> None:
    d = GenericRecipe()
    if positional:
        p.add_argument("out_dir", help="folder to create (train/val images and labels)")
    p.add_argument("--seed", type=int, default=d.seed, help="data and training seed")
    p.add_argument(
        "--image-size", type=int, default=d.image_size, help="side of the square images, px"
    )
    p.add_argument(
        "--train-per-class", type=int, default=d.train_per_class, help="training images per class"
    )
    p.add_argument(
        "--val-per-class", type=int, default=d.val_per_class, help="held-out images per class"
    )


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="drcl", description="Long-tailed detection pre-training with 2DRCL."
    )
    verbosity = parser.add_mutually_exclusive_group()
    verbosity.add_argument("-q", "--quiet", action="store_true", help="warnings and errors only")
    verbosity.add_argument("-v", "--verbose", action="store_true", help="debug messages too")
    sub = parser.add_subparsers(dest="command", required=True)
    _data_parsers(sub)

    p = sub.add_parser("evaluate", help="LVIS-style AP/APr/APc/APf (and COCO-LT AP1..AP4)")
    p.add_argument("--gt", help="ground-truth json (LVIS or COCO format)")
    p.add_argument("--dets", help="detections, COCO results format json")
    p.add_argument(
        "--iou-type", choices=["bbox", "segm"], default="bbox", help="boxes or masks (default bbox)"
    )
    p.add_argument(
        "--max-dets",
        type=_positive_int,
        default=300,
        help="detections kept per image over all classes, and maxDets (LVIS: 300)",
    )
    p.add_argument("--train-ann", help="training json for frequency groups and COCO-LT bins")
    p.add_argument("--config", help="run config (with --checkpoint: run inference first)")
    p.add_argument("--checkpoint", help="detector checkpoint to evaluate on data.val_ann")
    p.add_argument("--work-dir", default=None, help="where detections and metrics go")
    p.add_argument("--out", help="metrics json (checked writable before evaluating)")
    p.add_argument("overrides", nargs="*", help="key.sub=value config overrides")
    p.set_defaults(handler=cli_evaluate)

    p = sub.add_parser(
        "proposals", help="boxes to pre-train on: gt, file or class-agnostic detector"
    )
    _add_config_args(p)
    p.add_argument("--out", required=True, help="proposals json")
    p.set_defaults(handler=cli_proposals)

    p = sub.add_parser("pretrain", help="2DRCL pre-training")
    _add_config_args(p)
    p.add_argument("--work-dir", required=True, help="run folder: checkpoints, logs, config")
    p.add_argument("--resume", action="store_true", help="continue from the latest good checkpoint")
    p.set_defaults(handler=cli_pretrain)

    p = sub.add_parser(
        "pretrain-generic",
        help="supervised classification pre-training of the generic backbone (ImageNet stand-in)",
    )
    p.add_argument("--work-dir", required=True, help="data/ and generic.safetensors go here")
    _generic_data_args(p, positional=False)
    d = GenericRecipe()
    p.add_argument(
        "--depth", type=int, default=d.depth, help="ResNet depth (must equal model.depth)"
    )
    p.add_argument("--iters", type=int, default=d.iters, help="SGD iterations (cosine schedule)")
    p.add_argument("--batch-size", type=int, default=d.batch_size, help="images per iteration")
    p.add_argument("--lr", type=float, default=d.lr, help="peak learning rate")
    p.set_defaults(handler=cli_pretrain_generic)

    p = sub.add_parser("finetune", help="fine-tune Faster / Mask R-CNN")
    _add_config_args(p)
    p.add_argument("--work-dir", required=True, help="run folder: checkpoints, logs, metrics")
    p.add_argument("--init", help="pre-trained weights (safetensors)")
    p.add_argument("--resume", action="store_true", help="continue from the latest good checkpoint")
    p.set_defaults(handler=cli_finetune)

    p = sub.add_parser(
        "analyze",
        help="error breakdown, classifier weight norms, attention maps, box composition, probe",
    )
    p.add_argument(
        "what",
        choices=["errors", "weight-norms", "attention", "box-composition", "probe"],
        help="which analysis",
    )
    p.add_argument(
        "rest", nargs=argparse.REMAINDER, help="its arguments (drcl analyze WHAT --help)"
    )
    p.set_defaults(handler=cli_analyze)

    p = sub.add_parser("report", help="one folder with tables and plots comparing runs")
    p.add_argument("runs", nargs="*", help="run dirs, optionally NAME=DIR")
    p.add_argument("--out", required=True, help="report folder (replaced atomically)")
    p.add_argument(
        "--ablation", help="a `drcl ablate` work dir: its table over seeds (results.json)"
    )
    p.add_argument("--gt", help="validation json (default: data.val_ann of the runs' config)")
    p.add_argument("--train-ann", help="training json (default: data.train_ann of the config)")
    p.set_defaults(handler=cli_report)

    p = sub.add_parser("export", help="convert weights for torchvision / detectron2 / mmdetection")
    p.add_argument("checkpoint", help="drcl weights (.safetensors, or a finetune .pt checkpoint)")
    p.add_argument(
        "--to",
        choices=["torchvision", "detectron2", "mmdet"],
        required=True,
        help="target library's key layout",
    )
    p.add_argument(
        "--out",
        required=True,
        help="output file; the suffix picks the format: .pth / .pt = torch file of plain "
        "tensors (detectron2, mmdet, torchvision load it), .pkl = detectron2's pickle, "
        ".safetensors = safetensors; any other suffix is refused",
    )
    p.set_defaults(handler=cli_export)

    p = sub.add_parser("demo", help="the whole pipeline on the embedded dataset, on CPU")
    p.add_argument("--work-dir", default="work/demo", help="run folder (default work/demo)")
    p.add_argument(
        "--with-random", action="store_true", help="also fine-tune from random init (~+4 min)"
    )
    p.add_argument(
        "overrides",
        nargs="*",
        help="key.sub=value overrides of both stages, e.g. finetune.arch=atss finetune.loss=focal",
    )
    p.set_defaults(handler=cli_demo)

    p = sub.add_parser("ablate", help="the paper's ablation grid (HCL, LCL, DRB, AR, SR)")
    _add_config_args(p)
    p.add_argument("--work-dir", required=True, help="folder for all runs of the grid")
    p.add_argument(
        "--seeds", type=int, default=None, help="seeds per row, 0..K-1 (default: the config's)"
    )
    p.set_defaults(handler=cli_ablate)
    return parser


class _StdStream(logging.StreamHandler):
    """Writes to whatever ``sys.stdout`` / ``sys.stderr`` is at the time of each record (so
    output redirected after set-up, e.g. by pytest's capsys, still goes where it should)."""

    def __init__(self, name: str, max_level: int | None = None) -> None:
        super().__init__()
        self._name, self._max_level = name, max_level

    @property
    def stream(self):  # type: ignore[override]
        return getattr(sys, self._name)

    @stream.setter
    def stream(self, value) -> None:  # StreamHandler.__init__ assigns it; always follow sys
        pass

    def handleError(self, record: logging.LogRecord) -> None:  # noqa: N802 (logging's name)
        # A closed stdout (`drcl ... | head`) must reach main(), which exits quietly; logging
        # would otherwise print "--- Logging error ---" and a traceback to stderr.
        if isinstance(sys.exc_info()[1], BrokenPipeError):
            raise
        super().handleError(record)

    def filter(self, record: logging.LogRecord) -> bool:
        if self._max_level is not None and record.levelno >= self._max_level:
            return False
        return super().filter(record)


def setup_logging(quiet: bool = False, verbose: bool = False) -> None:
    """Route the ``drcl`` loggers: INFO and DEBUG to stdout, warnings and errors to stderr, as
    bare messages. Only rank 0 (``RANK`` of torchrun) prints below ERROR.

    Handlers are replaced on each call, so repeated ``main()`` calls (tests) do not stack them.
    """
    rank = int(os.environ.get("RANK", "0"))
    level = logging.DEBUG if verbose else logging.WARNING if quiet else logging.INFO
    root = logging.getLogger("drcl")
    for handler in list(root.handlers):
        root.removeHandler(handler)
    err = _StdStream("stderr")
    err.setLevel(logging.WARNING)
    for handler in (_StdStream("stdout", max_level=logging.WARNING), err):
        handler.setFormatter(logging.Formatter("%(message)s"))
        root.addHandler(handler)
    root.setLevel(level if rank == 0 else logging.ERROR)
    root.propagate = True  # pytest caplog (and any root handler of an embedding app) sees it too


def main(argv: list[str] | None = None) -> int:
    """Run ``drcl ARGV``; return the exit code (0 ok, 1 user error, 2 usage, 3 not implemented).

    A closed stdout (``drcl evaluate ... | head -3``) ends the command quietly with 141, the
    shell's code for a process killed by SIGPIPE, as ``head`` users expect of Unix tools.
    """
    try:
        code = _run(argv)
        sys.stdout.flush()  # a closed pipe must fail here, not in the interpreter's exit flush
        return code
    except BrokenPipeError:
        _silence_stdout()
        return SIGPIPE_EXIT


def _silence_stdout() -> None:
    """Point stdout at /dev/null so that Python's final flush cannot print a second error."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError, AttributeError):  # stdout replaced (pytest) or already closed
        pass


def _run(argv: list[str] | None) -> int:
    parser = build_parser()
    # overrides may come after options (`--work-dir D train.lr=0.1`): collect leftovers
    args, extra = parser.parse_known_args(argv)
    if extra:
        if not hasattr(args, "overrides") or any(e.startswith("-") or "=" not in e for e in extra):
            parser.error(f"unrecognized arguments: {' '.join(extra)}")
        args.overrides = [*args.overrides, *extra]
    setup_logging(args.quiet, args.verbose)
    from omegaconf.errors import MissingMandatoryValue

    try:
        return int(args.handler(args) or 0)
    except MissingMandatoryValue as err:  # a `???` key of the schema (the data paths)
        key = getattr(err, "full_key", "?")
        log.error(
            "drcl %s: error: %s is required: set it in the config or as %s=...",
            args.command,
            key,
            key,
        )
        return 1
    except BrokenPipeError:
        raise
    except (ValueError, FloatingPointError, OSError, UnpicklingError) as err:
        # User-facing errors (bad config, bad data, missing or unreadable files): one clear
        # line, exit 1. (ConfigError is a ValueError; OSError covers folders given for files,
        # permissions, full disks.)
        log.error("drcl %s: error: %s", args.command, user_message(err))
        return 1


def user_message(err: BaseException) -> str:
    """The message of ``err``; for an error re-raised from a DataLoader worker (which carries
    the worker's whole traceback), only its last line, the original error."""
    if isinstance(err, OSError) and err.strerror and err.filename:
        return f"{err.filename}: {err.strerror}"
    if isinstance(err, UnpicklingError):
        return "not a checkpoint that loads without running code (weights_only); refused"
    text = str(err)
    if "Original Traceback" in text:
        last = [line for line in text.splitlines() if line.strip()][-1]
        return last.split(": ", 1)[-1] if ": " in last else last
    return text


if __name__ == "__main__":
    sys.exit(main())
