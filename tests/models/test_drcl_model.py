"""DRCLModel on a tiny batch: losses, gradients, switches, passes, export, EMA, determinism."""

import dataclasses

import pytest
import torch
from torchvision.models.detection import FasterRCNN
from torchvision.models.detection.faster_rcnn import FastRCNNPredictor, TwoMLPHead

from drcl.config import ConfigError, load_config
from drcl.config.schema import ARConfig, Config, HCLConfig, LCLConfig, SRConfig
from drcl.models.backbone import build_resnet_fpn
from drcl.pretrain.runner import build_drcl_model

from .tiny import B, K, make_batch, make_model


def trainable_without_grad(model):
    return [n for n, p in model.named_parameters() if p.requires_grad and p.grad is None]


def test_all_terms_finite_and_every_trainable_parameter_gets_a_gradient():
    model = make_model()
    out = model(make_batch())
    assert set(out) == {"loss", "loss_hcl", "loss_lcl", "loss_ar", "loss_sr"}
    assert all(torch.isfinite(v) and v.dim() == 0 for v in out.values())
    total = sum(out[f"loss_{t}"] for t in ("hcl", "lcl", "ar", "sr"))
    torch.testing.assert_close(out["loss"], total)
    out["loss"].backward()
    assert trainable_without_grad(model) == []
    heads = [model.hcl_predictor, model.online.hcl_projector, model.online.box_head]
    heads += [model.online.lcl_projector, model.lcl_predictor, model.ar_decoder, model.sr_predictor]
    for head in heads:  # not only connected: a real signal arrives
        assert sum(float(p.grad.abs().sum()) for p in head.parameters()) > 0
    assert all(not p.requires_grad and p.grad is None for p in model.target.parameters())


def test_no_valid_box_anywhere_gives_zero_lcl_and_keeps_the_graph():
    model = make_model()
    out = model(make_batch(valid=torch.zeros(B, K, dtype=torch.bool)))
    assert out["loss_lcl"].item() == 0.0 and out["loss_lcl"].requires_grad
    out["loss"].backward()
    assert trainable_without_grad(model) == []
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)


def _count_body_calls(encoder):
    calls = []
    encoder.backbone.body.register_forward_hook(lambda m, i, o: calls.append(i[0].shape[0]))
    return calls


def test_passes_per_step_online_twice_target_once():
    model = make_model()
    online, target = _count_body_calls(model.online), _count_body_calls(model.target)
    model(make_batch())
    assert online == [2 * B, B]  # [view1; view2] once, masked view 1 once
    assert target == [2 * B]  # reused by HCL, LCL and SR


@pytest.mark.parametrize("off", ["hcl", "lcl", "ar", "sr"])
def test_switched_off_term_is_not_built_nor_computed(off):
    cfgs = {"hcl": HCLConfig(), "lcl": LCLConfig(), "ar": ARConfig(), "sr": SRConfig()}
    cfgs[off] = dataclasses.replace(cfgs[off], weight=0.0)
    model = make_model(**cfgs)
    online, target = _count_body_calls(model.online), _count_body_calls(model.target)
    out = model(make_batch())
    assert out[f"loss_{off}"].item() == 0.0 and not out[f"loss_{off}"].requires_grad
    on = [t for t in ("hcl", "lcl", "ar", "sr") if t != off]
    torch.testing.assert_close(out["loss"], sum(out[f"loss_{t}"] for t in on))
    out["loss"].backward()
    assert trainable_without_grad(model) == []
    built = {"hcl": model.hcl_predictor, "lcl": model.lcl_predictor}
    built |= {"ar": model.ar_decoder, "sr": model.sr_predictor}
    assert built[off] is None
    if off == "sr":  # AR(input=masked) still needs the masked pass
        assert online == [2 * B, B] and target == [2 * B]


def test_single_terms_leave_no_unused_trainable_parameter():
    """DDP without find_unused_parameters: HCL only, pixel AR from view 1 only, SR only."""
    zero = {t: dataclasses.replace(c, weight=0.0) for t, c in _default_terms().items()}
    for term, cfg in (
        ("hcl", HCLConfig()),
        ("ar", ARConfig(input="view")),
        ("sr", SRConfig()),
        ("ar", ARConfig(target="object")),
    ):
        model = make_model(**(zero | {term: cfg}))
        model(make_batch())["loss"].backward()
        assert trainable_without_grad(model) == [], (term, cfg)


def _default_terms():
    return {"hcl": HCLConfig(), "lcl": LCLConfig(), "ar": ARConfig(), "sr": SRConfig()}


def test_options_infonce_queue_supervised_object_ar():
    model = make_model(
        hcl=HCLConfig(loss="infonce", queue_size=8),
        lcl=LCLConfig(supervised=True),
        ar=ARConfig(target="object", input="view", channels=8),
    )
    queue = model.queue.clone()
    out = model(make_batch())
    assert all(torch.isfinite(v) for v in out.values())
    out["loss"].backward()
    assert trainable_without_grad(model) == []
    assert int(model.queue_ptr) == 2 * B and not torch.equal(model.queue[: 2 * B], queue[: 2 * B])
    torch.testing.assert_close(model.queue[2 * B :], queue[2 * B :])


def test_export_loads_into_torchvision_faster_rcnn():
    model = make_model()
    state = model.export_state_dict()
    assert {k.split(".")[0] for k in state} == {"backbone", "roi_heads"}
    detector = FasterRCNN(
        build_resnet_fpn(18, 32, "frozen_bn"),
        num_classes=None,
        box_head=TwoMLPHead(32 * 7 * 7, 64),
        box_predictor=FastRCNNPredictor(64, 5),
    )
    result = detector.load_state_dict(state, strict=False)
    assert result.unexpected_keys == []
    missing = [k for k in result.missing_keys if not k.startswith(("rpn.", "roi_heads.box_pred"))]
    assert missing == []
    loaded = detector.state_dict()
    assert torch.equal(
        loaded["roi_heads.box_head.fc7.weight"], state["roi_heads.box_head.fc7.weight"]
    )
    assert torch.equal(
        loaded["backbone.body.layer4.1.conv2.weight"], state["backbone.body.layer4.1.conv2.weight"]
    )


def test_sgd_steps_lower_the_loss_and_ema_follows():
    model = make_model()
    batch = make_batch()
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.SGD(params, lr=0.05, momentum=0.9)
    losses = []
    for step in range(6):
        out = model(batch)
        losses.append(out["loss"].item())
        opt.zero_grad()
        out["loss"].backward()
        opt.step()
        m = model.update_target(step / 6)
    assert losses[-1] < losses[0]
    assert 0.99 <= m < 1.0
    w_on = model.online.backbone.body.conv1.weight
    w_tg = model.target.backbone.body.conv1.weight
    assert not torch.equal(w_on, w_tg)


def test_same_seed_same_loss():
    a = make_model(seed=3)(make_batch(seed=5))["loss"]
    b = make_model(seed=3)(make_batch(seed=5))["loss"]
    c = make_model(seed=4)(make_batch(seed=5))["loss"]
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_from_config_and_errors():
    cfg = Config()
    cfg.model.depth, cfg.model.fpn_channels, cfg.model.box_head_dim = 18, 16, 32
    model = build_drcl_model(cfg)
    assert model.online.backbone.out_channels == 16 and model.online.box_head.fc7.out_features == 32
    assert model(make_batch())["loss"].isfinite()
    with pytest.raises(ConfigError, match="pretrain.hcl.loss.*allowed: byol, infonce"):
        load_config(None, ["pretrain.hcl.loss=simclr"])
    with pytest.raises(ConfigError, match="pretrain.ar.input.*allowed: masked, view"):
        load_config(None, ["pretrain.ar.input=both"])
    zero = {t: dataclasses.replace(c, weight=0.0) for t, c in _default_terms().items()}
    with pytest.raises(ValueError, match="all 0"):
        make_model(**zero)
    batch = make_batch()
    with pytest.raises(ValueError, match="missing.*masked_view1"):
        model(dataclasses.replace(batch, masked_view1=None))
    with pytest.raises(ValueError, match="boxes2"):
        model(dataclasses.replace(batch, boxes2=batch.boxes2[:, :3]))
    with pytest.raises(ValueError, match=r"batch.mask.*sr.patch=32"):
        model(dataclasses.replace(batch, mask=torch.zeros(B, 4, 4, dtype=torch.bool)))


def test_shared_pass_runs_the_online_encoder_once_and_keeps_sr_ar():
    shared = make_model(sr=SRConfig(shared_pass=True))
    online, target = _count_body_calls(shared.online), _count_body_calls(shared.target)
    out = shared(make_batch())
    # [masked view 1; view 2] once, then a no-grad BN-statistics pass over view 2 (test_bn_stats)
    assert online == [2 * B, B] and target == [2 * B]
    out["loss"].backward()
    assert trainable_without_grad(shared) == []
    # per-sample features (eval-mode BN): SR and AR read exactly the masked view's features
    separate = make_model()
    separate.load_state_dict(shared.state_dict())
    a, b = shared.eval()(make_batch()), separate.eval()(make_batch())
    torch.testing.assert_close(a["loss_sr"], b["loss_sr"])
    torch.testing.assert_close(a["loss_ar"], b["loss_ar"])
    assert not torch.allclose(a["loss_hcl"], b["loss_hcl"])  # HCL now sees the masked view 1
