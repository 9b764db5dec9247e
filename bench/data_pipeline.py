"""Pre-training data throughput per worker: DRB sample -> decode -> two views + boxes + mask.

Measures :class:`drcl.pretrain.dataset.PretrainDataset` in this process (what one DataLoader worker
does), on the demo data at a given view size, in images per second. ``bench/run_all.py`` divides
it by the images per second a training step consumes at the same size (``step_cost.py``).

Usage::

    python bench/data_pipeline.py --size 320 --images 64
"""

from __future__ import annotations

import argparse
import itertools
import time
from typing import Any

import torch
from common import WORK, bench_overrides, emit, median

from drcl.config import load_config
from drcl.engine.distributed import DistInfo
from drcl.pretrain.loop import build_pretrain_data


def throughput(size: int, images: int, reps: int = 3, depth: int = 18) -> dict[str, Any]:
    """Median images/s of ``PretrainDataset[sample]`` over ``reps`` runs of ``images`` samples."""
    cfg = load_config(None, bench_overrides(depth, size, 2))
    work = WORK / "data_pipeline"
    work.mkdir(parents=True, exist_ok=True)
    data = build_pretrain_data(cfg.data, cfg.train, cfg.pretrain, work, DistInfo())
    data.sampler.set_epoch(0)
    samples = list(itertools.islice(iter(data.sampler), images * (reps + 1)))
    dataset = data.dataset
    for s in samples[:images]:  # warm-up: file cache, allocator
        dataset[s]
    rates = []
    for r in range(1, reps + 1):
        chunk = samples[r * images : (r + 1) * images]
        t0 = time.perf_counter()
        for s in chunk:
            dataset[s]
        rates.append(len(chunk) / (time.perf_counter() - t0))
    return {"size": size, "images": images, "reps": reps, "images_per_s": median(rates)}


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--size", type=int, default=320)
    p.add_argument("--images", type=int, default=64)
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--threads", type=int, default=1, help="torch threads (a worker uses 1)")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    emit(throughput(args.size, args.images, args.reps))


if __name__ == "__main__":
    main()
