import torch

from drcl.config import load_config
from drcl.engine.distributed import DistInfo
from drcl.pretrain.loop import build_pretrain_data


def _first_batches(data, n):
    it = data.batches()
    return [next(it) for _ in range(n)], it


def test_batch_layout(tiny_overrides, tmp_path):
    cfg = load_config(None, tiny_overrides)
    data = build_pretrain_data(cfg.data, cfg.train, cfg.pretrain, tmp_path, DistInfo())
    (batch,), _ = _first_batches(data, 1)
    b, k, s = 4, cfg.pretrain.lcl.boxes_per_image, cfg.pretrain.views.size
    assert batch.view1.shape == batch.view2.shape == batch.masked_view1.shape == (b, 3, s, s)
    assert batch.boxes1.shape == batch.boxes2.shape == (b, k, 4)
    assert batch.box_valid.dtype == torch.bool and batch.box_valid.shape == (b, k)
    assert batch.box_valid.any()
    assert batch.mask.shape == (b, s // cfg.pretrain.sr.patch, s // cfg.pretrain.sr.patch)
    # exactly half of the patches masked; masked pixels are zero in the masked copy
    assert batch.mask.flatten(1).sum(1).tolist() == [8] * b
    valid_labels = batch.box_labels[batch.box_valid]
    assert (valid_labels >= 1).all()  # source=gt: every box has its class
    assert data.logs()["alpha"] == 0.0


def test_stream_is_deterministic_and_resumes_exactly(tiny_overrides, tmp_path):
    cfg = load_config(None, tiny_overrides)
    a = build_pretrain_data(cfg.data, cfg.train, cfg.pretrain, tmp_path / "a", DistInfo())
    ref, _ = _first_batches(a, 5)
    b = build_pretrain_data(cfg.data, cfg.train, cfg.pretrain, tmp_path / "b", DistInfo())
    got, _ = _first_batches(b, 3)
    for x, y in zip(ref[:3], got, strict=True):
        for key, value in x.tensors().items():
            assert torch.equal(value, getattr(y, key)), key
    state = b.state_dict()
    assert state["consumed"] == 3 * 4
    c = build_pretrain_data(cfg.data, cfg.train, cfg.pretrain, tmp_path / "c", DistInfo())
    c.load_state_dict(state)
    assert c.position == 3
    it = c.batches()
    for want in ref[3:]:
        have = next(it)
        for key, value in want.tensors().items():
            assert torch.equal(value, getattr(have, key)), key


def test_missing_image_folder_fails_before_training(tiny_overrides, tmp_path):
    cfg = load_config(None, [*tiny_overrides, f"data.train_images={tmp_path / 'nope'}"])
    import pytest

    with pytest.raises(FileNotFoundError, match="data.train_images"):
        build_pretrain_data(cfg.data, cfg.train, cfg.pretrain, tmp_path, DistInfo())
