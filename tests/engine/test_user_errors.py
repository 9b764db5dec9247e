"""Engine faults a user can fix are one-line errors with a hint, not tracebacks: a full disk
while checkpointing (named, previous checkpoint kept), a checkpoint of another model shape on
resume, training data that gives no batch."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from tests.engine.toy import make_trainer

from drcl.engine import checkpoint as ckpt
from drcl.utils.errors import DiskFullError, NoBatchError, UserError


def test_full_disk_in_torch_save_names_the_checkpoint(tmp_path, monkeypatch):
    ckpt.save_checkpoint({"x": torch.ones(3)}, tmp_path, 1)

    def write_failed(obj, path):  # torch.save on a full disk: a RuntimeError, errno lost
        Path(path).write_bytes(b"partial")
        raise RuntimeError(
            "[enforce fail at inline_container.cc:778] . PytorchStreamWriter "
            "failed writing file data/0: file write failed"
        )

    monkeypatch.setattr(torch, "save", write_failed)
    with pytest.raises(DiskFullError) as info:
        ckpt.save_checkpoint({"x": torch.zeros(3)}, tmp_path, 2)
    assert str(tmp_path / "ckpt_0000002.pt") in str(info.value)
    assert "iteration 2" in str(info.value) and "--resume" in info.value.hint
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "ckpt_0000001.pt",
        "ckpt_0000001.pt.sha256",
    ]


def test_resume_into_another_model_shape_is_a_checkpoint_error(tmp_path):
    trainer = make_trainer(tmp_path, max_iters=3)
    trainer.fit()
    other = make_trainer(tmp_path, max_iters=6)
    other._unwrapped().lin = torch.nn.Linear(3, 2)  # the model changed since the checkpoint
    with pytest.raises(ckpt.CheckpointError) as info:
        other.resume()
    text = str(info.value)
    assert "ckpt_0000003.pt" in text and "does not fit this model" in text and "lin." in text
    assert isinstance(info.value, UserError) and "--work-dir" in info.value.hint


class _NoBatches:
    iters_per_epoch, position = 1, 0

    def batches(self):
        return iter(())

    def state_dict(self):
        return {}

    def load_state_dict(self, state):
        pass

    def to_device(self, batch, device):
        return batch

    def logs(self):
        return {}


def test_no_batch_is_a_user_error(tmp_path):
    trainer = make_trainer(tmp_path, max_iters=2)
    trainer.data = _NoBatches()
    with pytest.raises(NoBatchError, match="ended after 0 batches") as info:
        trainer.fit()
    assert "data.on_error=skip" in info.value.hint
    assert isinstance(info.value, RuntimeError)  # callers catching RuntimeError still do
