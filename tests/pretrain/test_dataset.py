"""Pre-training samples: K boxes padded to a fixed shape, and the batch collation."""

from __future__ import annotations

import torch

from drcl.models.batch import PretrainBatch
from drcl.pretrain.dataset import _pad, collate_views, draw_boxes
from drcl.sampling.drb import DRBSample, select_boxes


def test_pad_fills_to_k_with_zeros_and_false_and_truncates():
    boxes = torch.tensor([[1.0, 2.0, 3.0, 4.0], [5.0, 6.0, 7.0, 8.0]])
    out = _pad(boxes, 3, 4)
    assert torch.equal(out, torch.tensor([[1.0, 2, 3, 4], [5, 6, 7, 8], [0, 0, 0, 0]]))
    assert _pad(torch.tensor([True]), 3).tolist() == [True, False, False]
    assert _pad(torch.tensor([3, 4, 5, 6]), 2).tolist() == [3, 4]  # more than K: first K
    assert _pad(torch.zeros(0, 4), 2, 4).shape == (2, 4)  # no box at all


def _sample(value: float, k: int = 2) -> dict[str, torch.Tensor]:
    """One sample's tensors (3x4x4 views, K boxes) filled with ``value``."""
    view = torch.full((3, 4, 4), value)
    return {
        "view1": view,
        "view2": view + 1,
        "boxes1": torch.full((k, 4), value),
        "boxes2": torch.full((k, 4), value),
        "box_valid": torch.zeros(k, dtype=torch.bool),
        "box_labels": torch.zeros(k, dtype=torch.int64),
    }


def test_collate_views_stacks_tensors_and_keeps_skipped_ids_apart():
    out = collate_views([(_sample(0.0), -1), (_sample(1.0), 17), (_sample(2.0), -1)])
    assert isinstance(out, PretrainBatch)
    assert out.view1.shape == (3, 3, 4, 4) and out.view1[1].eq(1).all()
    assert out.boxes1.shape == (3, 2, 4) and out.box_valid.dtype == torch.bool
    assert out.skipped_ids == (17,)  # metadata, not a tensor: -1 (nothing replaced) left out
    assert out.mask is None and set(out.tensors()) == set(_sample(0.0))


def test_a_batch_with_no_box_keeps_its_shapes_and_moves_whole():
    out = collate_views([(_sample(0.0, k=0), -1), (_sample(1.0, k=0), -1)])
    assert out.boxes1.shape == (2, 0, 4) and out.box_valid.shape == (2, 0)
    assert out.box_labels[out.box_valid].numel() == 0
    moved = out.to("cpu")
    assert moved is not out and moved.skipped_ids == () and moved.boxes2.shape == (2, 0, 4)
    assert torch.equal(moved.view2, out.view2)


def test_draw_boxes_is_the_samples_first_seeded_draw():
    labels = torch.tensor([0, 1, 2, 2, 3, 1, 0, 2, 3, 3, 1, 2])
    factors = torch.tensor([1.0, 4.0, 1.0, 2.0], dtype=torch.float64)
    sample = DRBSample(index=5, alpha=0.7, seed=1234)
    chosen, g = draw_boxes(labels, sample, 8, factors)
    ref_g = torch.Generator().manual_seed(1234)
    assert torch.equal(chosen, select_boxes(labels, 8, 0.7, factors, ref_g))
    assert len(chosen) == 8 and len(set(chosen.tolist())) == 8
    assert torch.equal(torch.rand(3, generator=g), torch.rand(3, generator=ref_g))  # continued
    again, _ = draw_boxes(labels, sample, 8, factors)
    assert torch.equal(again, chosen)
