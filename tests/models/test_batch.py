"""PretrainBatch: tensors as fields, metadata apart, moved and laid out as a whole."""

from __future__ import annotations

import pytest
import torch

from drcl.engine.runtime import batch_to_channels_last
from drcl.models.batch import REQUIRED, PretrainBatch

from .tiny import B, K, make_batch, make_model


def test_tensors_are_the_set_fields_and_metadata_stays_apart():
    batch = make_batch()
    assert set(REQUIRED) <= set(batch.tensors()) and "skipped_ids" not in batch.tensors()
    bare = PretrainBatch(*(batch.tensors()[k] for k in REQUIRED), skipped_ids=(4, 9))
    assert set(bare.tensors()) == set(REQUIRED)  # mask, masked and clean view 1 unset


def test_to_moves_every_tensor_and_keeps_the_metadata():
    batch = PretrainBatch(**make_batch().tensors(), skipped_ids=(7,))
    moved = batch.to(torch.device("meta"))
    assert all(v.device.type == "meta" for v in moved.tensors().values())
    assert moved.skipped_ids == (7,) and batch.view1.device.type == "cpu"  # a copy


def test_channels_last_converts_the_4d_images_only():
    batch = make_batch()
    out = batch_to_channels_last(batch)
    assert isinstance(out, PretrainBatch)
    for key in ("view1", "view2", "masked_view1", "clean_view1"):
        assert getattr(out, key).is_contiguous(memory_format=torch.channels_last), key
        torch.testing.assert_close(getattr(out, key), getattr(batch, key), rtol=0, atol=0)
    assert out.boxes1 is batch.boxes1 and out.mask is batch.mask


def test_a_batch_without_boxes_gives_finite_losses():
    batch = make_batch(valid=torch.zeros(B, K, dtype=torch.bool))
    losses = make_model()(batch)
    assert all(torch.isfinite(v) for v in losses.values())
    assert losses["loss_lcl"] == 0


def test_a_missing_tensor_is_named():
    batch = make_batch()
    batch.mask = None
    with pytest.raises(ValueError, match=r"missing \['mask'\]"):
        make_model()(batch)
