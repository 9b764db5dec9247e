"""A tiny regression task for engine tests: deterministic data, a linear model."""

from __future__ import annotations

import torch

from drcl.config import load_config
from drcl.engine.distributed import DistInfo
from drcl.engine.schedule import Schedule, build_optimizer
from drcl.engine.setup import standard_hooks
from drcl.engine.trainer import RunEnv, Trainer


class ToyData:
    """Shuffled epochs of a fixed regression set; owns its position like SamplerEpochData."""

    def __init__(self, schedule: Schedule, n: int = 24, batch: int = 4):
        g = torch.Generator().manual_seed(0)
        self.x = torch.randn(n, 3, generator=g)
        self.y = self.x @ torch.tensor([1.0, -2.0, 0.5]) + 0.1 * torch.randn(n, generator=g)
        self.batch, self.schedule = batch, schedule
        self.iters_per_epoch = schedule.iters_per_epoch
        self.position = 0  # micro-batches handed to the loop (the trainer's iteration)

    def batches(self):
        while True:
            epoch, b = divmod(self.position, self.iters_per_epoch)
            order = torch.randperm(len(self.x), generator=torch.Generator().manual_seed(epoch))
            idx = order[b * self.batch : (b + 1) * self.batch]
            self.position += 1
            yield self.x[idx], self.y[idx]

    def state_dict(self):
        return {"position": self.position}

    def load_state_dict(self, state):
        self.position = state["position"]

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


def make_trainer(work_dir, max_iters=12, overrides=(), poison_at=None, hooks=None):
    """The toy run with the standard hooks (cost, checkpoints) unless ``hooks`` is given."""
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
    schedule = Schedule(max_iters, 6, cfg.train.accumulate)
    env = RunEnv(torch.device("cpu"), DistInfo(), work_dir)
    if hooks is None:
        hooks = standard_hooks(cfg.train, schedule, env)
    return Trainer(model, opt, ToyData(schedule), schedule, hooks, cfg=cfg.train, env=env)
