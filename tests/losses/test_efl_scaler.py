"""EFL's gradient statistics under a loss scaler (fp16): unscaled, and skipped steps add nothing.

The engine runs a ``GradScaler`` only on CUDA; these tests give the trainer a CPU ``GradScaler``
(same code path: ``scale`` / ``unscale_`` / ``step`` / ``update``) and make one step overflow,
as fp16 does: a batch whose loss, times the scale, exceeds fp32's range (inf gradients), or
logits cast to fp16, whose gradients overflow at 65504.
"""

from __future__ import annotations

import torch

from drcl.config import load_config
from drcl.engine.distributed import DistInfo
from drcl.engine.schedule import Schedule
from drcl.engine.trainer import RunEnv, Trainer
from drcl.losses.sigmoid_longtail import EqualizedFocalLoss

C, ANCHORS = 4, 12


def _batch(seed: int, boost: float = 1.0) -> dict:
    g = torch.Generator().manual_seed(seed)
    labels = torch.randint(-1, C + 1, (ANCHORS,), generator=g)
    labels[:C] = torch.arange(1, C + 1)  # every class has a positive
    return {"x": torch.randn(ANCHORS, 3, generator=g), "labels": labels, "boost": boost}


class ListData:
    """The given batches, in order, once (``iters_per_epoch`` of them)."""

    def __init__(self, batches: list[dict]):
        self.items, self.iters_per_epoch, self.position = batches, len(batches), 0

    def batches(self):
        for item in self.items:
            self.position += 1
            yield item

    def to_device(self, batch, device):
        return batch

    def logs(self):
        return {}

    def state_dict(self):
        return {}

    def load_state_dict(self, state):
        pass


class EFLModel(torch.nn.Module):
    """Linear logits -> EFL; ``fp16_logits`` casts them to half, as an fp16 head would."""

    def __init__(self, fp16_logits: bool = False):
        super().__init__()
        torch.manual_seed(0)
        self.lin = torch.nn.Linear(3, C)
        self.loss = EqualizedFocalLoss(C)
        self.fp16_logits = fp16_logits

    def forward(self, batch):
        logits = self.lin(batch["x"])
        if self.fp16_logits:
            logits = logits.half()
        loss = self.loss(logits, batch["labels"], 2.0) * batch["boost"]
        return {"loss": loss, "loss_cls": loss}


def _run(tmp_path, name, batches, scaler=None, fp16_logits=False, accumulate=1):
    cfg = load_config(
        None,
        [
            "train.warmup_iters=0",
            "train.log_every=1",
            "train.checkpoint_every=1000",
            f"train.accumulate={accumulate}",
        ],
    ).train
    model = EFLModel(fp16_logits)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda it: 1.0)
    iters = len(batches) // accumulate
    schedule = Schedule(iters, len(batches), accumulate)
    env = RunEnv(torch.device("cpu"), DistInfo(), tmp_path / name)
    trainer = Trainer(model, opt, ListData(batches), schedule, cfg=cfg, env=env, lr_scheduler=sched)
    if scaler is not None:
        trainer.scaler = scaler
    trainer.fit()
    return model, trainer


def _scaler(init_scale: float, backoff: float = 0.5) -> torch.amp.GradScaler:
    return torch.amp.GradScaler("cpu", init_scale=init_scale, backoff_factor=backoff)


def test_overflow_step_is_skipped_and_stats_match_fp32(tmp_path):
    # 2^120 * scale 2^10 = 2^130 > fp32 max: that step's gradients are inf, the scaler skips it
    batches = [_batch(0), _batch(1, boost=2.0**120), _batch(2), _batch(3)]
    scaled, trainer = _run(tmp_path, "fp16", batches, _scaler(2.0**10))
    ref, _ = _run(tmp_path, "fp32", [b for b in batches if b["boost"] == 1.0])
    assert trainer.scaler.get_scale() == 2.0**9  # the overflow was seen and the step skipped
    assert scaled.loss.skipped_grad_steps == 1 and ref.loss.skipped_grad_steps == 0
    assert torch.isfinite(scaled.loss.pos_neg).all()
    # the three applied steps, unscaled: the same sums as fp32 (scaling by 2^k is exact)
    for name in ("pos_grad", "neg_grad", "pos_neg"):
        got, want = getattr(scaled.loss, name), getattr(ref.loss, name)
        assert torch.allclose(got, want, rtol=1e-12, atol=0), name
    assert torch.equal(scaled.lin.weight, ref.lin.weight)
    assert (ref.loss.pos_grad > 0).all() and (ref.loss.pos_neg < 1).any()  # stats moved


def test_accumulated_micro_batches_are_unscaled_once(tmp_path):
    batches = [_batch(s) for s in range(4)]
    scaled, _ = _run(tmp_path, "fp16", batches, _scaler(2.0**12), accumulate=2)
    ref, _ = _run(tmp_path, "fp32", batches, accumulate=2)
    assert torch.allclose(scaled.loss.pos_grad, ref.loss.pos_grad, rtol=1e-12, atol=0)
    assert torch.allclose(scaled.loss.neg_grad, ref.loss.neg_grad, rtol=1e-12, atol=0)


def test_fp16_logits_stay_finite_through_overflow(tmp_path):
    # fp16 logits: gradients above 65504 overflow; at scale 2^24 every nonzero one does
    batches = [_batch(s) for s in range(5)]
    half, trainer = _run(tmp_path, "fp16", batches, _scaler(2.0**24, backoff=2.0**-14), True)
    ref, _ = _run(tmp_path, "fp32", batches[1:])
    assert trainer.scaler.get_scale() == 2.0**10 and half.loss.skipped_grad_steps == 1
    assert torch.isfinite(half.loss.pos_neg).all() and torch.isfinite(half.lin.weight).all()
    # fp16 rounds logits and gradients (11-bit mantissa): equal to fp32 within 1e-2
    assert torch.allclose(half.loss.pos_grad, ref.loss.pos_grad, rtol=1e-2, atol=0)
    assert torch.allclose(half.loss.pos_neg, ref.loss.pos_neg, rtol=1e-2, atol=0)


def test_without_the_engine_each_backward_counts_and_non_finite_is_dropped():
    loss_fn = EqualizedFocalLoss(C).train()
    b = _batch(0)
    z = torch.randn(ANCHORS, C, requires_grad=True)
    loss_fn(z.clone(), b["labels"], 2.0).backward()  # a fresh logits tensor, as a head gives
    first = loss_fn.pos_grad.clone()
    assert torch.allclose(first, z.grad.abs().double().mul(_pos_mask(b)).sum(0), rtol=1e-12)
    assert (first > 0).all() and loss_fn.skipped_grad_steps == 0
    (loss_fn(z.clone(), b["labels"], 2.0) * float("inf")).backward()  # inf gradients
    assert torch.equal(loss_fn.pos_grad, first) and loss_fn.skipped_grad_steps == 1
    assert torch.isfinite(loss_fn.pos_neg).all()


def test_end_grad_step_unscales_and_drops_skipped_steps():
    loss_fn = EqualizedFocalLoss(C).train()
    loss_fn.defer_grad_stats()
    b = _batch(0)
    z = torch.randn(ANCHORS, C, requires_grad=True)
    (loss_fn(z.clone(), b["labels"], 2.0) * 8.0).backward()  # a loss scale of 8
    assert torch.equal(loss_fn.pos_grad, torch.zeros(C, dtype=torch.float64))  # staged only
    loss_fn.end_grad_step(8.0, applied=True)
    once = loss_fn.pos_grad.clone()
    unscaled = (z.grad / 8.0).abs().double().mul(_pos_mask(b)).sum(0)
    assert torch.allclose(once, unscaled, rtol=1e-12)
    loss_fn(z.clone(), b["labels"], 2.0).backward()
    loss_fn.end_grad_step(1.0, applied=False)  # the scaler skipped it: nothing added
    assert torch.equal(loss_fn.pos_grad, once) and loss_fn.skipped_grad_steps == 1
    loss_fn.end_grad_step(1.0, applied=True)  # nothing staged: no change
    assert torch.equal(loss_fn.pos_grad, once)


def _pos_mask(b: dict) -> torch.Tensor:
    labels = b["labels"]
    onehot = torch.nn.functional.one_hot(labels.clamp(min=0), C + 1)[:, 1:]
    return (onehot * (labels >= 0)[:, None]).double()
