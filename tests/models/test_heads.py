"""Heads of the 2DRCL model: the paper's MLP, BatchNorm on valid rows only, global pooling."""

from __future__ import annotations

import torch
from torch import nn

from drcl.models.heads import MLPHead, global_pool, masked_rows


def test_mlp_head_is_the_papers_two_layer_mlp():
    head = MLPHead(16, 32, 8)
    kinds = [type(m) for m in head]
    assert kinds == [nn.Linear, nn.BatchNorm1d, nn.ReLU, nn.Linear]
    assert (head[0].in_features, head[0].out_features, head[3].out_features) == (16, 32, 8)
    assert head(torch.randn(5, 16)).shape == (5, 8)


def test_masked_rows_runs_batchnorm_on_the_valid_rows_only():
    torch.manual_seed(0)
    head = MLPHead(6, 12, 4).train()
    x = torch.randn(7, 6)
    x[[1, 4]] = 1e3  # padding rows: would wreck the batch statistics if they were seen
    valid = torch.tensor([True, False, True, True, False, True, True])
    ref_head = MLPHead(6, 12, 4).train()
    ref_head.load_state_dict(head.state_dict())
    out = masked_rows(head, x, valid)
    torch.testing.assert_close(out[valid], ref_head(x[valid]))
    assert torch.equal(out[~valid], torch.zeros(2, 4))
    torch.testing.assert_close(head[1].running_mean, ref_head[1].running_mean)


def test_masked_rows_with_fewer_than_two_valid_rows_runs_on_all_rows():
    torch.manual_seed(0)
    head = MLPHead(6, 12, 4).train()
    x, valid = torch.randn(3, 6), torch.tensor([False, True, False])
    ref = MLPHead(6, 12, 4).train()
    ref.load_state_dict(head.state_dict())
    out = masked_rows(head, x, valid)
    torch.testing.assert_close(out, ref(x) * valid[:, None].float())
    assert masked_rows(head, x, torch.zeros(3, dtype=torch.bool)).abs().sum() == 0


def test_global_pool_is_the_spatial_mean():
    x = torch.randn(2, 5, 3, 4)
    torch.testing.assert_close(global_pool(x), x.mean(dim=(2, 3)))
