"""RetinaNet / FCOS / ATSS: build, train and inference contracts, 2DRCL weights, mmdet export."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import save_file
from torchvision.models.detection import FCOS, RetinaNet

from drcl.config import load_config
from drcl.config.loader import ConfigError
from drcl.detection.model import load_pretrained
from drcl.detection.one_stage import (
    ATSS,
    ExpDistanceConv2d,
    build_resnet_fpn_p3p7,
    centerness_targets,
)
from drcl.export.convert import export_state
from drcl.finetune.runner import detector_for
from drcl.models.backbone import build_resnet_fpn

from .test_roi_heads import _images_targets

FREQS = torch.tensor([3.0, 40.0, 0.0, 250.0])


def _one_stage(tiny_config, arch, loss="focal"):
    cfg = tiny_config(arch, loss)
    cfg.finetune.head_convs = 1
    return cfg


def _targets():
    images, targets = _images_targets()
    return images, [{k: v for k, v in t.items() if k != "masks"} for t in targets]


@pytest.mark.parametrize(
    ("arch", "loss"), [("retinanet", "focal"), ("fcos", "ecm"), ("atss", "focal"), ("atss", "efl")]
)
def test_train_losses_finite_and_eval_capped_with_labels_1_to_c(tiny_config, arch, loss):
    torch.manual_seed(0)
    cfg = _one_stage(tiny_config, arch, loss)
    cfg.finetune.detections_per_img = 20
    model = detector_for(cfg, num_classes=4, class_freqs=FREQS)
    assert isinstance(model, {"retinanet": RetinaNet, "fcos": FCOS, "atss": ATSS}[arch])
    images, targets = _targets()
    losses = model.train()(images, targets)
    assert all(torch.isfinite(v) for v in losses.values()) and len(losses) >= 2
    sum(losses.values()).backward()
    assert model.backbone.body.layer4[0].conv1.weight.grad is not None
    with torch.no_grad():
        dets = model.eval()(images)
    for d in dets:
        assert len(d["boxes"]) <= 20 and (d["scores"] > 1e-4).all()
        assert d["labels"].numel() == 0 or (d["labels"].min() >= 1 and d["labels"].max() <= 4)
    assert model.head.classification_head.cls_logits.out_channels == 4 * (
        9 if arch == "retinanet" else 1
    )


def test_atss_defaults_follow_mmdet_atss_r50_fpn_1x(tiny_config):
    cfg = tiny_config("atss", "focal")
    model = detector_for(cfg, num_classes=4)
    ft = cfg.finetune
    assert (ft.focal_alpha, ft.focal_gamma, ft.giou_weight, ft.atss_topk) == (0.25, 2.0, 2.0, 9)
    assert (ft.score_thresh, ft.detections_per_img) == (1e-4, 300)  # LVIS test settings
    assert model.score_thresh == 1e-4 and model.detections_per_img == 300
    sizes = [s[0] for s in model.anchor_generator.sizes]
    assert sizes == [64.0, 128.0, 256.0, 512.0, 1024.0]  # 8 x stride, P3-P7
    assert model.anchor_generator.num_anchors_per_location() == [1] * 5
    # GN convs without bias, as mmdetection's ConvModule
    convs = [m for m in model.head.modules() if isinstance(m, torch.nn.Conv2d)]
    assert sum(c.bias is None for c in convs) == 2 * ft.head_convs
    lvis = load_config("configs/finetune/lvis_v1/atss_r50_2x_focal_2drcl.yaml")
    assert (lvis.train.lr, lvis.train.batch_size, lvis.train.epochs) == (0.01, 16, 24)


def test_centerness_targets_hand_computed():
    anchors = torch.tensor(
        [[0.0, 0.0, 20.0, 20.0], [10.0, 20.0, 30.0, 40.0]]
    )  # centres 10,10; 20,30
    gts = torch.tensor([[0.0, 0.0, 20.0, 20.0], [0.0, 0.0, 40.0, 40.0]])
    # first: centred -> 1; second: l=20 r=20 t=30 b=10 -> sqrt(1 * 10/30)
    assert torch.allclose(centerness_targets(anchors, gts), torch.tensor([1.0, (1 / 3) ** 0.5]))


def test_arch_loss_combinations_are_checked_at_load():
    with pytest.raises(ConfigError, match="allowed with finetune.arch=atss: focal, ecm, efl"):
        load_config(None, ["finetune.arch=atss"])  # the R-CNN default loss 'ce'
    with pytest.raises(ConfigError, match="allowed with finetune.arch=faster_rcnn"):
        load_config(None, ["finetune.loss=efl"])
    with pytest.raises(ConfigError, match="finetune.arch"):
        load_config(None, ["finetune.arch=yolo"])
    assert load_config(None, ["finetune.arch=atss", "finetune.loss=efl"]).finetune.arch == "atss"


def _pretrain_file(path, fpn=32):
    """A 2DRCL pre-training file: ResNet + FPN on C2-C5 + box head (torchvision layout)."""
    torch.manual_seed(3)
    bb = build_resnet_fpn(18, fpn, "frozen_bn", 5)
    state = {f"backbone.{k}": v for k, v in bb.state_dict().items()}
    state["roi_heads.box_head.fc6.weight"] = torch.randn(8, fpn * 49)
    state["roi_heads.box_head.fc6.bias"] = torch.randn(8)
    save_file(state, str(path))
    return bb, state


def test_2drcl_weights_load_p3_p5_and_p6_p7_heads_start_fresh(tiny_config, tmp_path, capsys):
    bb, state = _pretrain_file(tmp_path / "pre.safetensors")
    model = detector_for(_one_stage(tiny_config, "atss"), num_classes=4)
    report = load_pretrained(model, tmp_path / "pre.safetensors")
    own = model.state_dict()
    body = [k for k in state if k.startswith("backbone.body.")]
    assert set(body) <= set(report.loaded)
    fpn_loaded = sorted(k for k in report.loaded if k.startswith("backbone.fpn."))
    assert len(fpn_loaded) == 12  # inner/layer blocks of C3-C5, weight + bias
    assert torch.equal(
        own["backbone.fpn.inner_blocks.0.0.weight"], state["backbone.fpn.inner_blocks.1.0.weight"]
    )
    assert torch.equal(
        own["backbone.fpn.layer_blocks.2.0.bias"], state["backbone.fpn.layer_blocks.3.0.bias"]
    )
    assert {k for k in report.missing if k.startswith("backbone.")} == {
        f"backbone.fpn.extra_blocks.p{i}.{p}" for i in (6, 7) for p in ("weight", "bias")
    }
    assert all(k.startswith(("backbone.fpn.extra", "head.")) for k in report.missing)
    assert sorted(report.unexpected) == sorted(
        [
            f"backbone.fpn_p2.{b}.0.0.{p}"
            for b in ("inner_blocks", "layer_blocks")
            for p in ("bias", "weight")
        ]
        + ["roi_heads.box_head.fc6.bias", "roi_heads.box_head.fc6.weight"]
    )
    table = capsys.readouterr().out
    assert "backbone.fpn_p2" in table and "head.regression_head" in table
    assert f"{'backbone.fpn':<28} {12:>7} {4:>7} {0:>7}" in table
    # the C3-C5 FPN computes exactly the pre-trained P3-P5
    x = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        two, one = bb.eval()(x), model.backbone.eval()(x)
    for lvl in range(3):
        assert torch.allclose(one[str(lvl)], two[str(lvl + 1)], atol=1e-6)


def test_retinanet_and_fcos_take_2drcl_weights_too(tiny_config, tmp_path, capsys):
    _pretrain_file(tmp_path / "pre.safetensors")
    for arch in ("retinanet", "fcos"):
        model = detector_for(_one_stage(tiny_config, arch), num_classes=4)
        report = load_pretrained(model, tmp_path / "pre.safetensors", verbose=False)
        assert sum(k.startswith("backbone.fpn.") for k in report.loaded) == 12


def test_backbone_levels_and_strides():
    bb = build_resnet_fpn_p3p7(18, 16, "bn", 5, None)
    out = bb(torch.rand(1, 3, 128, 128))
    assert [tuple(v.shape[-2:]) for v in out.values()] == [(16, 16), (8, 8), (4, 4), (2, 2), (1, 1)]


# mmdet/models/dense_heads/atss_head.py (read from open-mmlab/mmdetection): ConvModule(conv, gn)
# stacks cls_convs / reg_convs, then atss_cls, atss_reg, atss_centerness; necks/fpn.py extra
# convs fpn_convs.3/4 with add_extra_convs='on_output'.
MM_ATSS_HEAD = (
    [f"bbox_head.{b}.{i}.conv.weight" for b in ("cls_convs", "reg_convs") for i in range(2)]
    + [
        f"bbox_head.{b}.{i}.gn.{p}"
        for b in ("cls_convs", "reg_convs")
        for i in range(2)
        for p in ("weight", "bias")
    ]
    + [f"bbox_head.atss_{n}.{p}" for n in ("cls", "reg", "centerness") for p in ("weight", "bias")]
)


def test_atss_exports_to_mmdet_head_names(tiny_config):
    cfg = _one_stage(tiny_config, "atss", "efl")
    cfg.finetune.head_convs = 2
    model = detector_for(cfg, num_classes=4)
    state = model.state_dict()
    out = export_state(state, "mmdet")
    keys = set(out.state)
    assert sorted(k for k in keys if k.startswith("bbox_head.")) == sorted(MM_ATSS_HEAD)
    neck = {
        f"neck.{n}.{i}.conv.{p}"
        for n in ("lateral_convs", "fpn_convs")
        for i in range(3)
        for p in ("weight", "bias")
    }
    neck |= {f"neck.fpn_convs.{i}.conv.{p}" for i in (3, 4) for p in ("weight", "bias")}
    assert {k for k in keys if k.startswith("neck.")} == neck
    assert torch.equal(
        out.state["bbox_head.atss_centerness.weight"],
        state["head.regression_head.bbox_ctrness.weight"],
    )
    assert torch.equal(
        out.state["bbox_head.reg_convs.1.gn.weight"], state["head.regression_head.conv.4.weight"]
    )
    # EFL's gradient statistics are drcl's own: reported, not mapped; torchvision drops them
    assert sorted(out.unmapped) == [
        f"head.cls_loss.{n}" for n in ("neg_grad", "pos_grad", "pos_neg")
    ]
    assert not any("cls_loss" in k for k in export_state(state, "torchvision").state)


def test_fcos_is_not_exported_with_atss_names(tiny_config):
    model = detector_for(_one_stage(tiny_config, "fcos"), num_classes=4)
    out = export_state(model.state_dict(), "mmdet")
    assert not any(k.startswith("bbox_head.") for k in out.state)
    assert any(k.startswith("head.") for k in out.unmapped)


def test_atss_distances_cannot_die_like_relu():
    """All-negative pre-activations over non-negative features (what a tower of GN + ReLU gives)
    kill a relu output for good; ATSS's exp distances stay positive and keep a gradient."""
    torch.manual_seed(0)
    feats = torch.rand(2, 8, 5, 5)  # non-negative, as after GN + ReLU
    conv = ExpDistanceConv2d(8, 4)
    relu_conv = torch.nn.Conv2d(8, 4, 3, padding=1)
    with torch.no_grad():
        for c in (conv, relu_conv):
            c.weight.fill_(-0.1)
            c.bias.zero_()
    dead = torch.relu(relu_conv(feats))
    dead.sum().backward()
    assert dead.eq(0).all() and relu_conv.weight.grad.eq(0).all()
    out = conv(feats)
    out.sum().backward()
    assert (out > 0).all() and conv.weight.grad.abs().sum() > 0
    # hand-computed: exp(bias + sum(w * x)) with the clamp at log(1000 / 16)
    with torch.no_grad():
        conv.weight.zero_()
        conv.bias.fill_(100.0)
    assert torch.allclose(conv(feats), torch.full((2, 4, 5, 5), 1000.0 / 16))


def test_atss_initial_distances_centre_on_the_anchor(tiny_config):
    """With the real init (bias log 1/2, weights N(0, 0.01^2)) the distances are spread around
    half the anchor side, not equal to it (the docstring's measured ranges)."""
    cfg = _one_stage(tiny_config, "atss")
    cfg.finetune.head_convs = 2
    torch.manual_seed(0)
    model = detector_for(cfg, num_classes=4).eval()
    head = model.head.regression_head
    with torch.no_grad():
        feats = model.backbone(torch.rand(2, 3, 64, 64)).values()
        d = torch.cat([head.bbox_reg(head.conv(f)).flatten() for f in feats])
    assert 0.4 < d.median() < 0.6  # centred on the anchor (0.5 per side)
    assert d.std() > 0.02 and 0.1 < d.min() and d.max() < 2.0  # spread, not the anchor itself


def test_atss_prediction_with_zero_weights_is_the_anchor_box(tiny_config):
    """exp(log 1/2) = 1/2 of the anchor side on each side: decoded, the anchor itself."""
    model = detector_for(_one_stage(tiny_config, "atss"), num_classes=4)
    reg = model.head.regression_head.bbox_reg
    assert isinstance(reg, ExpDistanceConv2d)
    assert torch.allclose(reg.bias, torch.full((4,), 0.5).log())
    with torch.no_grad():
        reg.weight.zero_()
    anchors = torch.tensor([[10.0, 20.0, 42.0, 52.0], [0.0, 0.0, 64.0, 64.0]])
    distances = reg(torch.rand(1, reg.in_channels, 1, 2)).permute(0, 2, 3, 1).reshape(-1, 4)
    boxes = model.head.box_coder.decode(distances, anchors)
    assert torch.allclose(boxes, anchors)
    fcos = detector_for(_one_stage(tiny_config, "fcos"), num_classes=4)
    assert not isinstance(fcos.head.regression_head.bbox_reg, ExpDistanceConv2d)  # torchvision's
