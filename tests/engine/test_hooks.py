"""Hooks: called in registration order around the loop, after_train also on failure."""

from __future__ import annotations

import pytest
import torch

from drcl.engine.hooks import CheckpointHook, CostHook, EMAHook, HookBase

from .toy import make_trainer


class Recorder(HookBase):
    def __init__(self, name: str, calls: list) -> None:
        self.name, self.calls = name, calls

    def before_train(self) -> None:
        self.calls.append((self.name, "before"))

    def after_step(self, iteration: int, progress: float) -> None:
        self.calls.append((self.name, iteration, progress))

    def after_train(self) -> None:
        self.calls.append((self.name, "after"))


def test_hooks_run_in_order_with_iteration_and_progress(tmp_path):
    trainer = make_trainer(tmp_path, max_iters=2)
    calls: list = []
    trainer.register_hooks([Recorder("a", calls), Recorder("b", calls)])
    trainer.fit()
    assert calls == [
        ("a", "before"),
        ("b", "before"),
        ("a", 1, 0.5),
        ("b", 1, 0.5),
        ("a", 2, 1.0),
        ("b", 2, 1.0),
        ("a", "after"),
        ("b", "after"),
    ]


def test_after_train_runs_when_a_step_fails(tmp_path):
    class Boom(HookBase):
        def after_step(self, iteration: int, progress: float) -> None:
            raise RuntimeError("boom")

    trainer = make_trainer(tmp_path, max_iters=3)
    calls: list = []
    trainer.register_hooks([Boom(), Recorder("r", calls)])
    with pytest.raises(RuntimeError, match="boom"):
        trainer.fit()
    assert calls == [("r", "before"), ("r", "after")]


def test_ema_hook_passes_progress_to_update_target():
    seen = []

    class Model(torch.nn.Module):
        def update_target(self, progress: float) -> None:
            seen.append(progress)

    EMAHook(Model()).after_step(3, 0.75)
    assert seen == [0.75]


def test_on_batch_sees_every_batch_and_logs_join_the_log_row(tmp_path):
    from drcl.utils.run_dir import RunDir, read_metrics

    class Counter(HookBase):
        def __init__(self) -> None:
            self.batches = 0

        def on_batch(self, batch) -> None:
            assert batch is not None
            self.batches += 1

        def logs(self) -> dict[str, float]:
            return {"batches_seen": float(self.batches)}

    trainer = make_trainer(tmp_path, max_iters=3, overrides=["train.accumulate=2"])
    counter = Counter()
    trainer.register_hooks([counter])
    trainer.fit()
    assert counter.batches == 6  # accumulate=2 micro-batches per step
    rows = read_metrics(RunDir(tmp_path).metrics)
    assert [r["batches_seen"] for r in rows] == [2.0, 4.0, 6.0]


def test_checkpoint_hook_saves_every_n_and_at_the_end_with_the_hooks_state(tmp_path):
    from drcl.engine import checkpoint as ckpt

    trainer = make_trainer(tmp_path, max_iters=7)  # train.checkpoint_every=3
    assert [type(h) for h in trainer.hooks] == [CostHook, CheckpointHook]
    trainer.fit()
    assert [p.name for p in ckpt.list_checkpoints(tmp_path)] == [
        "ckpt_0000003.pt",
        "ckpt_0000006.pt",
        "ckpt_0000007.pt",
    ]
    state = ckpt.load_state(ckpt.list_checkpoints(tmp_path)[-1])
    assert state["iteration"] == 7 and state["hooks"]["cost"]["wall_s"] > 0


def test_checkpoint_hook_registered_last_saves_what_the_other_hooks_did(tmp_path):
    from drcl.engine import checkpoint as ckpt

    class Mark(HookBase):
        """Changes the model after each step, as the EMA update does."""

        def after_step(self, iteration: int, progress: float) -> None:
            with torch.no_grad():
                self.trainer.model.lin.bias.fill_(float(iteration))

    trainer = make_trainer(tmp_path, max_iters=3, hooks=[])
    trainer.register_hooks([Mark(), CheckpointHook(every=3, keep=1)])
    trainer.fit()
    state = ckpt.load_state(ckpt.list_checkpoints(tmp_path)[-1])
    assert state["model"]["lin.bias"].item() == 3.0


def test_no_hooks_no_checkpoint_and_a_bad_interval_is_refused(tmp_path):
    from drcl.engine import checkpoint as ckpt

    make_trainer(tmp_path, max_iters=3, hooks=[]).fit()
    assert ckpt.list_checkpoints(tmp_path) == [] and not (tmp_path / "cost.json").exists()
    with pytest.raises(ValueError, match="every = 0"):
        CheckpointHook(every=0, keep=1)


def test_cost_hook_writes_cost_json_at_checkpoint_steps_only(tmp_path):
    import json

    from drcl.engine.cost import CostMeter

    trainer = make_trainer(tmp_path, max_iters=4, hooks=[])
    meter = CostMeter(torch.device("cpu"), 1, 4, {"stage": "toy"})
    trainer.register_hooks([CostHook(meter, every=2)])
    seen = []
    real_write = meter.write
    meter.write = lambda work_dir, it: seen.append(it) or real_write(work_dir, it)
    trainer.fit()
    assert seen == [2, 4]
    cost = json.loads((tmp_path / "cost.json").read_text())
    assert (cost["stage"], cost["iterations"], cost["images_seen"]) == ("toy", 4, 16)
