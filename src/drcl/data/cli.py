"""``drcl data check | stats | make-demo``: parse arguments, call the data layer."""

from __future__ import annotations

import argparse
import logging
import time

log = logging.getLogger(__name__)


def _print_limited(lines: list, max_print: int) -> None:
    for line in lines[: max(0, max_print)]:
        log.info(line)
    if len(lines) > max_print:
        log.info(f"... {len(lines) - max_print} more not printed (--max-print)")


def cli_check(args: argparse.Namespace) -> int:
    """``drcl data check ANN [--images DIR] [--fix-out OUT] [--max-print N]``.

    Problems are printed errors first, then warnings, then infos; identical findings on many
    records are one line with their count and the first 3 ids (``group_problems``). Exit 0
    when the input has no errors (warnings and infos allowed), else 1. With ``--fix-out``
    a cleaned copy is written, its changes printed and the copy checked again; the exit code
    still describes the input.
    """
    from drcl.data.check import _summary, check_annotations, fix_annotations, group_problems
    from drcl.utils.io import check_output_file

    max_print = getattr(args, "max_print", 200)
    if getattr(args, "fix_out", None):  # never over the input (links and hard links too)
        check_output_file(args.fix_out, "--fix-out", inputs={"ANN": args.ann}, suffixes=(".json",))
    problems = check_annotations(args.ann, args.images)
    rank = {"error": 0, "warning": 1, "info": 2}  # errors first when --max-print truncates
    ordered = sorted(problems, key=lambda p: rank[p.severity])
    _print_limited(group_problems(ordered), max_print)
    log.info(f"{args.ann}: {_summary(problems)}")
    if not args.images:
        log.info("image files not checked (no --images ROOT): the json only")
    if getattr(args, "fix_out", None):
        changes = fix_annotations(args.ann, args.fix_out, args.images)
        _print_limited([f"fix: {c}" for c in changes], max_print)
        after = check_annotations(args.fix_out, args.images)
        log.info(f"wrote {args.fix_out}: {len(changes)} changes; now {_summary(after)}")
    return 1 if any(p.severity == "error" for p in problems) else 0


def cli_stats(args: argparse.Namespace) -> int:
    """``drcl data stats ANN [--out PNG] [--rare-max N --common-max N]``: print the tables,
    write the long-tail plot."""
    from drcl.data.groups import COMMON_MAX_IMAGES, RARE_MAX_IMAGES
    from drcl.data.stats import write_stats
    from drcl.utils.io import check_output_file

    if args.out:  # a PNG: `stats.txt` is refused rather than filled with PNG bytes
        check_output_file(args.out, inputs={"ANN": args.ann}, suffixes=(".png",))
    rare_max = getattr(args, "rare_max", None)
    common_max = getattr(args, "common_max", None)
    write_stats(
        args.ann,
        args.out,
        rare_max=RARE_MAX_IMAGES if rare_max is None else rare_max,
        common_max=COMMON_MAX_IMAGES if common_max is None else common_max,
    )
    return 0


def cli_make_demo(args: argparse.Namespace) -> int:
    """``drcl data make-demo OUT [--seed S] [--size small|medium]``."""
    from drcl.data.demo import make_demo_dataset, summarize
    from drcl.utils.io import check_output_dir, read_json

    check_output_dir(args.out_dir, "OUT_DIR")
    start = time.perf_counter()
    paths = make_demo_dataset(args.out_dir, seed=args.seed, size=args.size)
    seconds = time.perf_counter() - start
    train = read_json(paths["train_ann"])
    val = read_json(paths["val_ann"])
    tune = read_json(paths["tune_ann"])
    log.info(
        f"demo dataset ({args.size}, seed {args.seed}) in {seconds:.1f} s: "
        f"{len(train['images'])} train images / {len(train['annotations'])} instances, "
        f"{len(val['images'])} val images / {len(val['annotations'])} instances, "
        f"{len(tune['images'])} tune images / {len(tune['annotations'])} instances"
    )
    for g, s in summarize(train).items():
        log.info(
            f"  {g}: {s['classes']} classes, {s['instances']} train instances, "
            f"{s['min_images']}-{s['max_images']} train images per class"
        )
    for key, path in paths.items():
        log.info(f"  {key}: {path}")
    return 0
