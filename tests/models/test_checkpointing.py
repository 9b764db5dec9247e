"""Activation checkpointing of the online ResNet stages: same numbers, BN counted once."""

import pytest
import torch
from torch import nn

from drcl.config import load_config
from drcl.config.schema import SRConfig
from drcl.models.backbone import CheckpointedStage, build_resnet_fpn, set_stage_checkpointing
from drcl.models.drcl import DRCLModel
from drcl.pretrain.runner import build_drcl_model

from .tiny import TINY, make_batch


def _step(checkpointing: bool, masked_bn_update: bool = False):
    """One forward + backward of the tiny model; returns losses, grads and BN buffers."""
    torch.manual_seed(0)
    sr = SRConfig(masked_bn_update=masked_bn_update)
    model = DRCLModel(**TINY, sr=sr, checkpointing=checkpointing).train()
    calls = []
    model.online.backbone.body.layer2[0].register_forward_hook(lambda *a: calls.append(1))
    losses = model(make_batch())
    losses["loss"].backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    buffers = {n: b.clone() for n, b in model.named_buffers() if "running" in n or "tracked" in n}
    return {k: v.detach() for k, v in losses.items()}, grads, buffers, len(calls)


@pytest.mark.parametrize("masked_bn_update, batches_counted", [(False, 1), (True, 2)])
def test_losses_grads_and_bn_stats_match_without_checkpointing(masked_bn_update, batches_counted):
    """Also with the masked pass leaving the BN statistics alone (``sr.masked_bn_update=false``,
    the default: ``track_running_stats`` off in that pass, which the recomputation replays)."""
    ref_losses, ref_grads, ref_buffers, ref_calls = _step(False, masked_bn_update)
    losses, grads, buffers, calls = _step(True, masked_bn_update)
    # two online passes ([v1; v2] and the masked view): each stage recomputed once in backward
    assert (ref_calls, calls) == (2, 4)
    for k in ref_losses:
        torch.testing.assert_close(losses[k], ref_losses[k], rtol=1e-6, atol=1e-7)
    assert grads.keys() == ref_grads.keys() and len(grads) > 50
    for n in ref_grads:
        torch.testing.assert_close(grads[n], ref_grads[n], rtol=1e-5, atol=1e-6, msg=n)
    # recomputation must not update running stats nor count the batch a second time
    bn_tracked = [n for n in buffers if n.startswith("online.backbone.body.layer")]
    assert any(n.endswith("num_batches_tracked") for n in bn_tracked)
    for n in ref_buffers:
        torch.testing.assert_close(buffers[n], ref_buffers[n], rtol=0, atol=0, msg=n)
    # [v1; v2] counts once; the masked pass once more only with sr.masked_bn_update
    n_tracked = buffers["online.backbone.body.layer1.0.bn1.num_batches_tracked"]
    assert int(n_tracked) == batches_counted


def _toy_stage():
    torch.manual_seed(1)
    return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.Dropout(0.5))


def _run_toy(stage: nn.Module, x: torch.Tensor, between=None):
    torch.manual_seed(2)  # dropout mask
    y = stage(x)
    if between is not None:
        between(stage)
    (y * torch.arange(y.numel()).reshape(y.shape).float()).sum().backward()
    return y.detach(), x.grad.clone(), stage[0].weight.grad.clone()


def test_dropout_replays_the_forward_rng_state():
    x = torch.randn(2, 3, 8, 8)
    ref = _run_toy(_toy_stage(), x.clone().requires_grad_())
    ckpt = CheckpointedStage(*_toy_stage())
    ckpt.checkpointing = True
    out = _run_toy(ckpt, x.clone().requires_grad_())
    assert (ref[0] == 0).any()  # dropout did drop something
    for a, b in zip(out, ref, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-6)


def test_eval_mode_bn_recomputes_with_forward_time_mode_and_stats():
    """A caller may run a pass with BN in eval mode and switch back (or update the running
    stats in a later pass) before backward: recomputation must use the forward's state."""

    def disturb(stage):
        stage[1].train()
        stage[1].running_mean = stage[1].running_mean + 5.0  # a new tensor, as a later pass

    x = torch.randn(2, 3, 8, 8)
    plain = _toy_stage()
    plain[1].eval()
    ref = _run_toy(plain, x.clone().requires_grad_(), disturb)
    ckpt = CheckpointedStage(*_toy_stage())
    ckpt.checkpointing = True
    ckpt[1].eval()
    out = _run_toy(ckpt, x.clone().requires_grad_(), disturb)
    for a, b in zip(out, ref, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-6)
    assert ckpt[1].training  # the caller's switch survives the recomputation


def test_pass_without_running_stat_update_recomputes_the_same_way():
    """A caller may turn ``track_running_stats`` off for one pass (the masked view must not move
    the statistics) and back on before backward: no CheckpointError, same numbers, no update."""

    def untracked(stage, x):
        stage[1].track_running_stats = False
        torch.manual_seed(2)
        y = stage(x)
        stage[1].track_running_stats = True
        return y

    x = torch.randn(2, 3, 8, 8)
    outs = []
    for ckpt in (False, True):
        stage = CheckpointedStage(*_toy_stage())
        stage.checkpointing = ckpt
        xg = x.clone().requires_grad_()
        y = untracked(stage, xg)
        (y * torch.arange(y.numel()).reshape(y.shape).float()).sum().backward()
        assert int(stage[1].num_batches_tracked) == 0
        assert torch.equal(stage[1].running_mean, torch.zeros(8))
        outs.append((y.detach(), xg.grad, stage[0].weight.grad))
    for a, b in zip(*outs, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-6)


def test_switch_keeps_keys_and_only_checkpoints_with_grad():
    backbone = build_resnet_fpn(18, 16, "bn")
    keys = list(backbone.state_dict())
    set_stage_checkpointing(backbone.body, True)
    assert list(backbone.state_dict()) == keys
    assert all(isinstance(getattr(backbone.body, f"layer{i}"), CheckpointedStage) for i in (1, 4))
    set_stage_checkpointing(backbone.body, False)
    assert not backbone.body.layer3.checkpointing
    set_stage_checkpointing(backbone.body, True)
    calls = []
    backbone.body.layer1[0].register_forward_hook(lambda *a: calls.append(1))
    with torch.no_grad():
        backbone(torch.randn(1, 3, 64, 64))
    assert calls == [1]  # nothing saved, nothing recomputed
    with pytest.raises(ValueError, match="has no layer1"):
        set_stage_checkpointing(nn.Sequential(nn.Conv2d(3, 3, 1)), True)


def test_config_turns_it_on_for_the_online_encoder_only():
    cfg = load_config(None, ["model.depth=18", "model.norm=bn", "pretrain.checkpointing=true"])
    model = build_drcl_model(cfg)
    assert model.online.backbone.body.layer1.checkpointing
    assert not isinstance(model.target.backbone.body.layer1, CheckpointedStage)
    assert not DRCLModel(**TINY).online.backbone.body.layer1.checkpointing
