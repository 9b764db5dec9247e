"""The exported backbone's BN running statistics come from unmasked views only."""

from __future__ import annotations

import copy

import torch
from torch import nn

from drcl.config.schema import SRConfig
from drcl.models.bn_stats import frozen_bn_stats

from .tiny import B, make_batch, make_model


def bn_buffers(module: nn.Module) -> dict[str, torch.Tensor]:
    """running_mean / running_var / num_batches_tracked of every BN layer, cloned."""
    return {
        k: v.clone()
        for k, v in module.state_dict().items()
        if k.rsplit(".", 1)[-1] in ("running_mean", "running_var", "num_batches_tracked")
    }


def assert_same(a: dict, b: dict) -> None:
    assert a.keys() == b.keys() and a
    for k in a:
        assert torch.equal(a[k], b[k]), k


def test_frozen_bn_stats_uses_batch_stats_and_restores_the_flag():
    bn = nn.BatchNorm2d(3).train()
    x = torch.randn(4, 3, 5, 5) * 3 + 1
    with frozen_bn_stats(bn):
        y = bn(x)
    mean = x.mean((0, 2, 3), keepdim=True)
    var = x.var((0, 2, 3), unbiased=False, keepdim=True)
    torch.testing.assert_close(y, (x - mean) / torch.sqrt(var + bn.eps))
    assert bn.running_mean.eq(0).all() and bn.running_var.eq(1).all()
    assert int(bn.num_batches_tracked) == 0 and bn.track_running_stats
    bn(x)  # outside the block it tracks again
    assert int(bn.num_batches_tracked) == 1 and not bn.running_mean.eq(0).all()


def test_masked_pass_leaves_running_stats_to_the_unmasked_views():
    model = make_model().train()
    reference = copy.deepcopy(model)
    batch = make_batch()
    model(batch)["loss"].backward()
    # reference: only the unmasked online pass over [view 1; view 2], on a copy
    reference.online.encode(torch.cat([batch.view1, batch.view2]), with_fpn=True)
    assert_same(bn_buffers(model.online.backbone), bn_buffers(reference.online.backbone))
    # the earlier behaviour, kept as an option, does move them (so the test can fail)
    old = make_model(sr=SRConfig(masked_bn_update=True)).train()
    old(batch)
    moved = bn_buffers(old.online.backbone)
    assert any(not torch.equal(moved[k], v) for k, v in bn_buffers(model.online.backbone).items())


def test_shared_pass_running_stats_come_from_view2_alone():
    model = make_model(sr=SRConfig(shared_pass=True)).train()
    reference = copy.deepcopy(model)
    batch = make_batch()
    model(batch)["loss"].backward()
    with torch.no_grad():
        reference.online.backbone.body(batch.view2)
    assert_same(bn_buffers(model.online.backbone), bn_buffers(reference.online.backbone))
    assert batch.view2.shape[0] == B


def test_eval_mode_changes_nothing():
    model = make_model(sr=SRConfig(shared_pass=True)).eval()
    before = bn_buffers(model.online.backbone)
    with torch.no_grad():
        model(make_batch())
    assert_same(before, bn_buffers(model.online.backbone))
