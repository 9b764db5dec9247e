import dataclasses
import json
import pickle

import pytest
import torch

from drcl.engine import checkpoint as ckpt
from drcl.engine.schedule import lr_factor
from drcl.engine.trainer import NonFiniteLossError

from .toy import make_trainer


def test_lr_factor_step_schedule_and_warmup():
    kw = dict(
        schedule="step", steps=[8 / 12, 11 / 12], gamma=0.1, warmup_iters=10, warmup_factor=0.001
    )
    assert lr_factor(0, 120, **kw) == pytest.approx(0.001)
    assert lr_factor(5, 120, **kw) == pytest.approx(0.001 * 0.5 + 0.5)
    assert lr_factor(79, 120, **kw) == 1.0
    assert lr_factor(80, 120, **kw) == pytest.approx(0.1)
    assert lr_factor(110, 120, **kw) == pytest.approx(0.01)
    cos = dict(kw, schedule="cosine", warmup_iters=0)
    assert lr_factor(60, 120, **cos) == pytest.approx(0.5)
    assert lr_factor(120, 120, **cos) == pytest.approx(0.0, abs=1e-12)


def test_training_lowers_loss_and_logs(tmp_path):
    tr = make_trainer(tmp_path, max_iters=12)
    tr.fit()
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r["iter"] for r in rows] == list(range(1, 13))
    assert {"iter", "lr", "loss", "loss_mse", "alpha", "data_time", "step_time"} <= set(rows[0])
    assert rows[-1]["loss"] < rows[0]["loss"]
    assert [p.name for p in ckpt.list_checkpoints(tmp_path)][-1] == "ckpt_0000012.pt"


def test_resume_is_bit_for_bit(tmp_path):
    full = make_trainer(tmp_path / "a", max_iters=12)
    full.fit()
    part = make_trainer(tmp_path / "b", max_iters=12)
    part.schedule = dataclasses.replace(part.schedule, max_iters=7)  # "interrupted" after 7
    part.fit()
    for p in ckpt.list_checkpoints(tmp_path / "b"):
        if p.name.endswith("7.pt"):
            p.unlink()  # the run died before its 7th-iteration checkpoint
    resumed = make_trainer(tmp_path / "b", max_iters=12)
    assert resumed.resume() and resumed.iteration == 6
    resumed.fit()
    for k, v in full.model.state_dict().items():
        assert torch.equal(v, resumed.model.state_dict()[k]), k
    lines = (tmp_path / "b" / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(x)["iter"] for x in lines] == list(range(1, 13))
    # the same losses as the uninterrupted run, the resumed part included
    ref = (tmp_path / "a" / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(x)["loss"] for x in lines] == [json.loads(x)["loss"] for x in ref]


def test_the_iteration_is_the_datas_position_and_comes_back_on_resume(tmp_path):
    tr = make_trainer(tmp_path, max_iters=5, overrides=["train.accumulate=2"])
    tr.fit()
    assert (tr.iteration, tr.data.position) == (5, 10)  # 2 micro-batches a step
    state = ckpt.load_state(ckpt.list_checkpoints(tmp_path)[0])  # ckpt_0000003.pt
    assert state["iteration"] == 3 and state["data"] == {"position": 6}
    resumed = make_trainer(tmp_path, max_iters=5, overrides=["train.accumulate=2"])
    assert resumed.iteration == 0 and resumed.resume() and resumed.iteration == 5


def test_a_checkpoint_whose_position_disagrees_is_refused(tmp_path):
    make_trainer(tmp_path, max_iters=3).fit()  # accumulate 1: iteration 3 at position 3
    other = make_trainer(tmp_path, max_iters=6, overrides=["train.accumulate=2"])
    with pytest.raises(ValueError) as info:
        other.resume()
    text = str(info.value)
    assert "ckpt_0000003.pt" in text and "saved at iteration 3" in text
    assert "3 micro-batches, train.accumulate=2) is iteration 1" in text


def test_a_checkpoint_without_a_position_is_refused(tmp_path):
    tr = make_trainer(tmp_path, max_iters=3)
    tr.fit()
    state = tr.state_dict()
    old = {k: v for k, v in state.items() if k not in ("iteration", "data", "hooks")}
    with pytest.raises(ValueError, match="old.pt: no iteration, data, hooks"):
        make_trainer(tmp_path / "x", max_iters=3).load_state_dict(old, "old.pt")


def test_corrupted_latest_checkpoint_falls_back(tmp_path, caplog):
    make_trainer(tmp_path, max_iters=9).fit()
    latest = ckpt.list_checkpoints(tmp_path)[-1]
    data = latest.read_bytes()
    latest.write_bytes(data[: len(data) // 2])  # truncated
    tr = make_trainer(tmp_path, max_iters=12)
    with caplog.at_level("WARNING", logger="drcl"):
        assert tr.resume()
    assert tr.iteration == 6
    assert "checksum missing or wrong" in caplog.text


def test_malicious_pickle_is_refused(tmp_path):
    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    path = tmp_path / "ckpt_0000001.pt"
    path.write_bytes(pickle.dumps({"model": Evil()}))
    with pytest.raises(ckpt.CheckpointError, match="refused"):
        ckpt.load_state(path)


def test_nonfinite_loss_raises_with_iteration_and_term(tmp_path):
    tr = make_trainer(tmp_path, max_iters=12, poison_at=5)
    with pytest.raises(NonFiniteLossError, match=r"iteration 4: non-finite loss term\(s\) loss"):
        tr.fit()
    assert [p.name for p in ckpt.list_checkpoints(tmp_path)] == ["ckpt_0000003.pt"]


def test_nonfinite_loss_skip_counts(tmp_path):
    tr = make_trainer(tmp_path, max_iters=6, overrides=["train.nonfinite=skip"], poison_at=2)
    tr.fit()
    assert tr.skipped_steps == 1
    assert all(torch.isfinite(p).all() for p in tr.model.parameters())


def test_no_temporary_files_left(tmp_path):
    make_trainer(tmp_path, max_iters=6).fit()
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


def test_total_iters_max_iters_wins_else_epochs():
    from drcl.config.schema import TrainConfig
    from drcl.engine.schedule import total_iters

    assert total_iters(TrainConfig(epochs=3, max_iters=0), 7) == 21
    assert total_iters(TrainConfig(epochs=3, max_iters=5), 7) == 5
