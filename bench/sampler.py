"""DRB sampler at LVIS scale: epoch index generation for 100k images x 1,203 classes.

A synthetic long-tailed label set (Zipf class frequencies, 1-30 instances per image) gives the
repeat factors; the timed part is what every epoch pays: ``set_epoch`` + the epoch's index and
seed lists (stochastic rounding, shuffle, padding), median over epochs. The one-off factor
computation is timed too, for context.

Usage::

    python bench/sampler.py --images 100000 --classes 1203 --reps 7
"""

from __future__ import annotations

import argparse
import time
from typing import Any

import numpy as np
from common import emit, median

from drcl.sampling.drb import DynamicRebalancingSampler, repeat_factors_from_image_counts


def synthetic_labels(num_images: int, num_classes: int, seed: int = 0) -> tuple:
    """CSR ``(offsets, labels)`` with Zipf(1.1)-like class frequencies, LVIS-like tail."""
    rng = np.random.default_rng(seed)
    per_image = rng.integers(1, 31, size=num_images)
    offsets = np.concatenate([[0], np.cumsum(per_image)]).astype(np.int64)
    p = 1.0 / np.arange(1, num_classes + 1) ** 1.1
    labels = rng.choice(num_classes, size=int(offsets[-1]), p=p / p.sum()) + 1
    return offsets, labels.astype(np.int64)


def run(num_images: int, num_classes: int, reps: int, world: int = 1) -> dict[str, Any]:
    csr = synthetic_labels(num_images, num_classes)
    t0 = time.perf_counter()
    factors = repeat_factors_from_image_counts(csr, num_images, 1e-3, num_classes)
    factor_s = time.perf_counter() - t0
    sampler = DynamicRebalancingSampler(
        factors.image, factors.instance, num_replicas=world, rank=0, with_context=True
    )
    times, lengths = [], []
    for epoch in range(reps + 1):
        t0 = time.perf_counter()
        sampler.set_progress(epoch / max(reps, 1))
        sampler.set_epoch(epoch)
        indices = sampler.epoch_indices()
        mine = list(iter(sampler))  # this rank's (index, alpha, seed) stream, as a loader sees it
        if epoch:  # epoch 0 is the warm-up
            times.append(time.perf_counter() - t0)
            lengths.append(len(indices))
        assert len(mine) == len(indices) // world
    return {
        "images": num_images,
        "classes": num_classes,
        "instances": int(csr[0][-1]),
        "reps": reps,
        "epoch_s": median(times),
        "epoch_len": int(median(lengths)),
        "factors_s": factor_s,
    }


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--images", type=int, default=100_000)
    p.add_argument("--classes", type=int, default=1203)
    p.add_argument("--reps", type=int, default=7)
    args = p.parse_args(argv)
    emit(run(args.images, args.classes, args.reps))


if __name__ == "__main__":
    main()
