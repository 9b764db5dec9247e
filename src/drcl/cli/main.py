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
from drcl.predict.cli import add_predict_args, cli_predict, cli_test
from drcl.pretrain.cli import cli_pretrain
from drcl.proposals.cli import cli_proposals
from drcl.report.cli import cli_report
from drcl.utils.console import setup_logging
from drcl.utils.errors import UserError

log = logging.getLogger("drcl")
SIGPIPE_EXIT = 141  # 128 + SIGPIPE


def _add_config_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("config", help="YAML config (with optional _base_ inheritance)")
    p.add_argument("overrides", nargs="*", help="key.sub=value overrides, e.g. train.lr=0.01")


def _add_run_folder_args(p: argparse.ArgumentParser) -> None:
    group = p.add_mutually_exclusive_group()
    group.add_argument(
        "--resume",
        action="store_true",
        help="continue the run in --work-dir from its latest good checkpoint, with its own "
        "config.yaml (overrides may change only logging, checkpointing, workers, device)",
    )
    group.add_argument(
        "--overwrite",
        action="store_true",
        help="--work-dir holds another run: move it aside to DIR.old-<time> and start anew",
    )


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
    _add_group_args(p)
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


def _add_group_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--rare-max",
        type=int,
        default=None,
        help="LVIS rule: rare = at most this many training images (default 10; data.groups)",
    )
    p.add_argument(
        "--common-max",
        type=int,
        default=None,
        help="LVIS rule: common = at most this many training images (default 100)",
    )


def _add_category_mismatch_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--allow-category-mismatch",
        action="store_true",
        help="evaluate a val/test file whose category names differ from the training file's "
        "for the same id (data.allow_category_mismatch=true); ids are always matched by id",
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
    _add_group_args(p)
    p.add_argument("--config", help="run config (with --checkpoint: run inference first)")
    p.add_argument("--checkpoint", help="detector checkpoint to evaluate on data.val_ann")
    p.add_argument("--work-dir", default=None, help="where detections and metrics go")
    p.add_argument("--out", help="metrics json (checked writable before evaluating)")
    _add_category_mismatch_arg(p)
    p.add_argument("overrides", nargs="*", help="key.sub=value config overrides")
    p.set_defaults(handler=cli_evaluate)

    p = sub.add_parser(
        "proposals", help="boxes to pre-train on: gt, file or class-agnostic detector"
    )
    _add_config_args(p)
    p.add_argument("--out", required=True, help="proposals json")
    p.add_argument(
        "--clean-detector",
        action="store_true",
        help="source=detector: delete the detector's run folder OUT.detector/ afterwards "
        "(kept by default, so that a rerun resumes)",
    )
    p.set_defaults(handler=cli_proposals)

    p = sub.add_parser("pretrain", help="2DRCL pre-training")
    _add_config_args(p)
    p.add_argument("--work-dir", required=True, help="run folder: checkpoints, logs, config")
    _add_run_folder_args(p)
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
    _add_run_folder_args(p)
    _add_category_mismatch_arg(p)
    p.set_defaults(handler=cli_finetune)

    _predict_parsers(sub)

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
    p.add_argument(
        "--seed-noise",
        type=float,
        default=None,
        help="AP points the seed alone moves a single run (e.g. 2); best marks and deltas only "
        "beyond it (default: none, with a note)",
    )
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
    p.add_argument(
        "--for",
        dest="arch",
        choices=["two-stage", "one-stage"],
        help="the model the FPN must fit: two-stage (Faster/Mask R-CNN, FPN on C2-C5) or "
        "one-stage (RetinaNet/FCOS/ATSS, FPN on C3-C5); default: from the checkpoint",
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


def _predict_parsers(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("predict", help="run a fine-tuned detector on images: COCO results json")
    add_predict_args(p)
    p.add_argument(
        "--images", help="folder of images (any Pillow format); with --ann, their root folder"
    )
    p.add_argument("--ann", help="COCO/LVIS json whose images to predict on (ids kept)")
    p.add_argument("--out", required=True, help="COCO results json (boxes; masks as RLE)")
    p.add_argument("--draw", help="folder for one PNG per image with its detections drawn")
    p.add_argument(
        "--draw-score-thr", type=float, default=None, help="lowest score drawn (default 0.3)"
    )
    p.set_defaults(handler=cli_predict)

    p = sub.add_parser("test", help="predict on an annotation file, then evaluate (--eval-only)")
    add_predict_args(p)
    p.add_argument("--gt", required=True, help="annotation json to evaluate on")
    p.add_argument("--images", required=True, help="the folder its file_names are relative to")
    p.add_argument("--train-ann", help="training json for groups (default: data.train_ann)")
    p.add_argument("--out", help="output folder (default: RUN/eval-<gt file stem>)")
    p.set_defaults(handler=cli_test)


def main(argv: list[str] | None = None) -> int:
    """Run ``drcl ARGV``; return the exit code: 0 ok, 1 user error (one line and a hint), 2 usage,
    3 not implemented, 70 internal error (a bug: traceback in a log file, or on stderr with
    ``-v``), 130 interrupted, 141 closed stdout.

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
            _command_parser(parser, args).error(f"unrecognized arguments: {' '.join(extra)}")
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
    except KeyboardInterrupt:
        log.error("drcl %s: interrupted", args.command)
        return INTERRUPTED_EXIT
    except (UserError, *USER_ERRORS) as err:
        # User-facing errors (bad config, bad data, missing or unreadable files, a reused
        # output or run folder, a full disk): one clear line, a hint where there is one, exit 1.
        # (ConfigError is a ValueError; OSError covers folders given for files, permissions.)
        log.error("drcl %s: error: %s", args.command, user_message(err))
        hint = getattr(err, "hint", None) or _hint(err)
        if hint:
            log.error("  hint: %s", hint)
        return 1
    except Exception as err:  # noqa: BLE001 (a bug: reported as one, never as a bare traceback)
        if type(err).__name__ == "OutOfMemoryError":  # torch.cuda.OutOfMemoryError
            log.error("drcl %s: error: out of GPU memory: %s", args.command, str(err)[:200])
            log.error("  hint: lower train.batch_size (with train.accumulate to keep the batch)")
            return 1
        return internal_error(args.command, err, args.verbose)


# Exceptions that mean bad input or a bad environment, not a bug of drcl.
USER_ERRORS = (ValueError, FloatingPointError, OSError, UnpicklingError)
INTERRUPTED_EXIT = 130  # 128 + SIGINT
INTERNAL_ERROR_EXIT = 70  # sysexits' EX_SOFTWARE: a bug of drcl
BUG_REPORT = "the drcl issue tracker"  # where the project's bug reports go


def _hint(err: BaseException) -> str | None:
    from drcl.utils.io import is_disk_full

    if is_disk_full(err):
        return "free space on that disk (or write elsewhere) and run again"
    if isinstance(err, PermissionError):
        return "check the permissions of that path, or write elsewhere"
    return None


def internal_error(command: str, err: BaseException, verbose: bool) -> int:
    """Report an unexpected exception as a bug: one header line; the traceback goes to a log
    file, and to stderr with ``-v``."""
    import tempfile
    import time
    import traceback

    text = "".join(traceback.format_exception(err))
    log_path = None
    try:
        fd, log_path = tempfile.mkstemp(
            prefix=f"drcl-crash-{time.strftime('%Y%m%d-%H%M%S')}-", suffix=".log"
        )
        with os.fdopen(fd, "w") as fh:
            fh.write(f"drcl {' '.join(sys.argv[1:])}\n{text}")
    except OSError:  # a full or read-only /tmp must not hide the report
        log_path = None
    log.error(
        "drcl %s: internal error (this is a bug in drcl, not in your input): %s: %s",
        command,
        type(err).__name__,
        str(err).splitlines()[0] if str(err) else "",
    )
    where = f"the traceback is in {log_path}" if log_path else "rerun with -v for the traceback"
    log.error("  please report it at %s; %s", BUG_REPORT, where)
    if verbose:
        sys.stderr.write(text)
    return INTERNAL_ERROR_EXIT


def _command_parser(parser: argparse.ArgumentParser, args: argparse.Namespace):
    """The (sub)parser of the command given, so that a usage error prints its usage
    (``drcl finetune ... --device cuda`` shows finetune's, not the top-level list)."""
    for dest in ("command", "data_command"):
        subs = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
        name = getattr(args, dest, None)
        if not subs or name not in subs[0].choices:
            break
        parser = subs[0].choices[name]
    return parser


def user_message(err: BaseException) -> str:
    """The message of ``err``; for an error re-raised from a DataLoader worker (which carries
    the worker's whole traceback), only its last line, the original error."""
    plain_os_error = isinstance(err, OSError) and not isinstance(err, UserError)
    if plain_os_error and err.strerror and err.filename:
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
