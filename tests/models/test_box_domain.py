"""Box-domain model: id inheritance on hand-made boxes, losses and gradients, freezing, EMA,
export keys."""

import pytest
import torch
from omegaconf import OmegaConf

from drcl.config.schema import Config
from drcl.models.batch import PretrainBatch
from drcl.models.box_domain import assign_roi_ids
from drcl.pretrain.box.runner import build_box_detector, build_box_model

B, K, S = 2, 4, 64


def tiny_cfg():
    cfg = OmegaConf.structured(Config)
    cfg.model.depth, cfg.model.fpn_channels, cfg.model.box_head_dim = 18, 16, 32
    cfg.model.norm = "bn"
    cfg.data.min_size = cfg.data.max_size = S
    cfg.finetune.rpn_pre_nms_top_n_train = cfg.finetune.rpn_post_nms_top_n_train = 50
    cfg.finetune.rpn_pre_nms_top_n_test = cfg.finetune.rpn_post_nms_top_n_test = 50
    cfg.finetune.rpn_batch_size_per_image = 32
    cfg.pretrain.box.embed_dim = 8
    cfg.pretrain.box.rois_per_image = 16
    return cfg


def make_batch(seed=0):
    """Image 0 has no valid box; image 1 has 3 (view 2 = view 1 shifted by 2 px)."""
    g = torch.Generator().manual_seed(seed)
    boxes = torch.tensor([[4.0, 4, 30, 30], [20, 10, 60, 40], [2, 40, 20, 62], [0, 0, 0, 0]])
    valid = torch.tensor([[False] * K, [True, True, True, False]])
    return PretrainBatch(
        view1=torch.randn(B, 3, S, S, generator=g),
        view2=torch.randn(B, 3, S, S, generator=g),
        boxes1=boxes.expand(B, K, 4).clone(),
        boxes2=(boxes + 2).clamp(max=S).expand(B, K, 4).clone(),
        box_valid=valid,
        box_labels=torch.zeros(B, K, dtype=torch.int64),  # the box stage reads no labels
    )


def test_roi_ids_follow_the_best_box_at_iou_05():
    boxes = torch.tensor([[0.0, 0, 10, 10], [20, 20, 40, 40]])
    ids = torch.tensor([7, 9])
    proposals = torch.tensor(
        [
            [0.0, 0, 10, 9],  # IoU 0.9 with box 7
            [20, 20, 40, 30],  # IoU 0.5 with box 9: kept (>=)
            [20, 20, 40, 29],  # IoU 0.45: dropped
            [50, 50, 60, 60],  # no overlap: dropped (positives only)
            [0, 0, 40, 40],  # IoU 0.25 with box 9, 0.0625 with box 7: dropped
        ]
    )
    rois, roi_ids, matched = assign_roi_ids(proposals, boxes, ids, 0.5)
    # the two pseudo boxes are RoIs of their own id too
    assert roi_ids.tolist() == [7, 9, 7, 9]
    torch.testing.assert_close(rois, torch.cat([proposals[:2], boxes]))
    torch.testing.assert_close(matched, boxes[[0, 1, 0, 1]])


def test_roi_ids_without_pseudo_boxes_are_empty():
    rois, roi_ids, matched = assign_roi_ids(
        torch.rand(5, 4), torch.zeros(0, 4), torch.zeros(0, dtype=torch.long)
    )
    assert rois.shape == (0, 4) and roi_ids.shape == (0,) and matched.shape == (0, 4)


def test_losses_gradients_and_frozen_backbone():
    torch.manual_seed(0)
    model = build_box_model(tiny_cfg()).train()
    assert not model.online.backbone.body.training and not model.target.training
    out = model(make_batch())
    assert set(out) == {
        "loss",
        "loss_objectness",
        "loss_rpn_box_reg",
        "loss_box_contrast",
        "loss_box_reg",
    }
    assert all(torch.isfinite(v) for v in out.values()) and out["loss_box_contrast"] > 0
    out["loss"].backward()
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    frozen = ("target.", "online.backbone.body.")
    assert trainable and not any(n.startswith(frozen) for n in trainable)
    without = [n for n, p in model.named_parameters() if p.requires_grad and p.grad is None]
    assert without == []


def test_batch_without_any_box_still_trains():
    model = build_box_model(tiny_cfg()).train()
    batch = make_batch()
    batch.box_valid[:] = False
    out = model(batch)
    assert out["loss_box_contrast"].item() == 0.0 and out["loss_box_reg"].item() == 0.0
    out["loss"].backward()


def test_ema_and_export():
    cfg = tiny_cfg()
    model = build_box_model(cfg)
    with torch.no_grad():
        for p in model.online.rpn.parameters():
            p.add_(1.0)
    before = model.target.rpn.head.conv[0][0].weight.clone()
    m = model.update_target(0.0)
    assert m == pytest.approx(0.996)
    online = model.online.rpn.head.conv[0][0].weight
    torch.testing.assert_close(
        model.target.rpn.head.conv[0][0].weight, 0.996 * before + 0.004 * online
    )
    assert model.update_target(1.0) == pytest.approx(1.0)
    keys = set(model.export_state_dict())
    assert any(k.startswith("rpn.head.") for k in keys)
    assert any(k.startswith("roi_heads.box_head.fc6") for k in keys)
    assert not any(k.startswith("roi_heads.box_predictor") for k in keys)
    detector_keys = set(build_box_detector(cfg).state_dict())
    assert keys <= detector_keys


@pytest.mark.parametrize(("norm", "want"), [("aligndet", 9.4657359 / 2), ("mean", 9.4657359 / 8)])
def test_box_regression_normalisation_by_hand(norm, want):
    # BoxCoder(10, 10, 5, 5), RoI [0, 0, 10, 10], zero predictions:
    #   pseudo box [1, 0, 11, 10]: dx = 10 * 1/10 = 1, rest 0          -> |.| sum 1
    #   pseudo box [0, 0, 20, 10]: dx = 10 * 5/10 = 5, dw = 5 ln 2     -> 5 + 3.4657359
    # AlignDet (mmdet L1Loss, avg_factor = #RoIs): 9.4657359 / 2 RoIs; "mean": / (2 x 4) values
    cfg = tiny_cfg()
    cfg.pretrain.box.reg_norm = norm
    model = build_box_model(cfg)
    rois = [torch.tensor([[0.0, 0, 10, 10]]), torch.tensor([[0.0, 0, 10, 10]])]
    matched = [torch.tensor([[1.0, 0, 11, 10]]), torch.tensor([[0.0, 0, 20, 10]])]
    got = model._box_regression(torch.zeros(2, 4), rois, matched)
    assert got.item() == pytest.approx(want, rel=1e-6)


def test_box_regression_aligndet_is_four_times_mean():
    torch.manual_seed(0)
    out = {}
    for norm in ("aligndet", "mean"):
        cfg = tiny_cfg()
        cfg.pretrain.box.reg_norm = norm
        torch.manual_seed(0)
        model = build_box_model(cfg).train()
        torch.manual_seed(1)
        out[norm] = model(make_batch())["loss_box_reg"].item()
    assert out["mean"] > 0 and out["aligndet"] == pytest.approx(4 * out["mean"], rel=1e-5)
