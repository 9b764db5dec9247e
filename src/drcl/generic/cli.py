"""``drcl data make-generic`` and ``drcl pretrain-generic`` (light: the work is imported inside)."""

from __future__ import annotations

import argparse
import logging
import time

log = logging.getLogger(__name__)


def cli_make_generic(args: argparse.Namespace) -> int:
    """``drcl data make-generic OUT [--seed S] [--image-size P] [--train-per-class N]``."""
    from drcl.generic.data import CLASSES, make_generic_dataset

    start = time.perf_counter()
    make_generic_dataset(
        args.out_dir, args.seed, args.image_size, args.train_per_class, args.val_per_class
    )
    log.info(
        "generic classification set in %.1f s: %d classes x (%d train + %d val) images of %d px "
        "-> %s",
        time.perf_counter() - start,
        len(CLASSES),
        args.train_per_class,
        args.val_per_class,
        args.image_size,
        args.out_dir,
    )
    return 0


def cli_pretrain_generic(args: argparse.Namespace) -> int:
    """``drcl pretrain-generic --work-dir DIR [--iters N] [--seed S] ...``."""
    from drcl.generic.job import GenericJob
    from drcl.generic.recipe import GenericRecipe
    from drcl.generic.train import run_generic

    recipe = GenericRecipe(
        seed=args.seed,
        image_size=args.image_size,
        train_per_class=args.train_per_class,
        val_per_class=args.val_per_class,
        depth=args.depth,
        iters=args.iters,
        batch_size=args.batch_size,
        lr=args.lr,
    )
    job = GenericJob.from_config(recipe, args.work_dir)
    run_generic(job)
    log.info("use it with model.weights=%s", job.weights)
    return 0
