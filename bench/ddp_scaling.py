"""Distributed path on CPU: samples/s of pre-training steps with 1 vs 2 DDP processes (gloo).

Tiny model (ResNet-18, FPN 64, box head 256, 128 px, 4 images per process), one torch thread
per process, the real data path (DRB sampler sharded by rank). Each process times its steps
after a warm-up; throughput = processes * batch per process * steps / slowest process's time.
It shows that the distributed path works (gathered LCL negatives, DDP all-reduce) and what it
costs; on a 2-core machine, ideal scaling is 2x.

Usage::

    python bench/ddp_scaling.py --steps 6
"""

from __future__ import annotations

import argparse
import socket
import time
from typing import Any

import torch
import torch.multiprocessing as mp
from common import WORK, bench_overrides, emit

TINY = [
    "model.fpn_channels=64",
    "model.box_head_dim=256",
    "model.norm=bn",
    "pretrain.ar.channels=16",
]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank: int, world: int, port: int, batch: int, steps: int, out: Any) -> None:
    import torch.distributed as dist

    from drcl.config import load_config
    from drcl.engine.distributed import init_from_env, set_local_env
    from drcl.pretrain.loop import build_pretrain_data
    from drcl.pretrain.runner import build_drcl_model

    torch.set_num_threads(1)
    set_local_env(rank, world, port)
    info = init_from_env(torch.device("cpu"))
    cfg = load_config(None, bench_overrides(18, 128, batch * world, TINY))
    work = WORK / f"ddp_{world}_{rank}"
    data = build_pretrain_data(cfg.data, cfg.train, cfg.pretrain, work, info)
    torch.manual_seed(0)
    model = build_drcl_model(cfg)
    ddp = torch.nn.parallel.DistributedDataParallel(model) if world > 1 else model
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=1e-3)
    stream = data.batches()
    batches = [next(stream) for _ in range(steps + 1)]
    for i, b in enumerate(batches):
        if i == 1:  # the first step is the warm-up
            if world > 1:
                dist.barrier()
            t0 = time.perf_counter()
        loss = ddp(b)["loss"]
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        model.update_target(0.5)
    out[rank] = time.perf_counter() - t0
    if world > 1:
        dist.destroy_process_group()


def samples_per_s(world: int, batch: int, steps: int) -> float:
    """Global samples/s of ``world`` processes doing ``steps`` timed steps each."""
    times = mp.Manager().dict()
    mp.spawn(_worker, args=(world, _free_port(), batch, steps, times), nprocs=world, join=True)
    return world * batch * steps / max(times.values())


def run(batch: int, steps: int) -> dict[str, Any]:
    one = samples_per_s(1, batch, steps)
    two = samples_per_s(2, batch, steps)
    return {
        "batch_per_process": batch,
        "steps": steps,
        "samples_per_s_1": one,
        "samples_per_s_2": two,
        "speedup": two / one,
    }


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--batch", type=int, default=4, help="images per process")
    p.add_argument("--steps", type=int, default=6)
    args = p.parse_args(argv)
    emit(run(args.batch, args.steps))


if __name__ == "__main__":
    main()
