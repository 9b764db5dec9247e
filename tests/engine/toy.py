"""A tiny regression task for engine tests: deterministic data, a linear model."""

from __future__ import annotations

import torch

from drcl.config import load_config
from drcl.engine.distributed import DistInfo
from drcl.engine.schedule import build_optimizer, build_scheduler
from drcl.engine.trainer import Trainer


class ToyData:
    def __init__(self, n: int = 24, batch: int = 4, seed: int = 0):
        g = torch.Generator().manual_seed(seed)
        self.x = torch.randn(n, 3, generator=g)
        self.y = self.x @ torch.tensor([1.0, -2.0, 0.5]) + 0.1 * torch.randn(n, generator=g)
        self.batch = batch
        self.iters_per_epoch = n // batch
        self.epoch, self.consumed = -1, 0  # like SamplerEpochData: the data owns its position
        self.restored = False

    def batches(self, epoch, progress):
        if not (self.restored and self.epoch == epoch):
            self.epoch, self.consumed = epoch, 0
        self.restored = False
        order = torch.randperm(len(self.x), generator=torch.Generator().manual_seed(epoch))
        while self.consumed < self.iters_per_epoch:
            b = self.consumed
            idx = order[b * self.batch : (b + 1) * self.batch]
            self.consumed += 1
            yield self.x[idx], self.y[idx]

    def state_dict(self):
        return {"epoch": self.epoch, "consumed": self.consumed}

    def load_state_dict(self, state):
        self.epoch, self.consumed = state["epoch"], state["consumed"]
        self.restored = True

    def to_device(self, batch, device):
        return batch

    def logs(self):
        return {"alpha": 0.5}


class ToyModel(torch.nn.Module):
    def __init__(self, poison_at: int | None = None):
        super().__init__()
        self.lin = torch.nn.Linear(3, 1)
        self.calls = 0
        self.poison_at = poison_at

    def forward(self, batch):
        x, y = batch
        self.calls += 1
        loss = torch.nn.functional.mse_loss(self.lin(x).squeeze(1), y)
        if self.poison_at is not None and self.calls == self.poison_at:
            loss = loss * float("nan")
        return {"loss": loss, "loss_mse": loss}


def make_trainer(work_dir, max_iters=12, overrides=(), poison_at=None):
    cfg = load_config(
        None,
        [
            "train.warmup_iters=2",
            "train.lr=0.05",
            "train.scale_lr=false",
            "train.log_every=1",
            "train.checkpoint_every=3",
            "train.keep_checkpoints=10",
            *overrides,
        ],
    )
    torch.manual_seed(0)
    model = ToyModel(poison_at)
    opt = build_optimizer([{"params": model.parameters()}], cfg.train, cfg.train.lr, 1e-4)
    sched = build_scheduler(opt, max_iters, cfg.train)
    return Trainer(
        model,
        opt,
        sched,
        ToyData(),
        cfg.train,
        work_dir,
        max_iters,
        torch.device("cpu"),
        DistInfo(),
    )
