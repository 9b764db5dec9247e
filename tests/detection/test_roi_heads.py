"""LongTailRoIHeads: same as torchvision with softmax CE; sigmoid scores for sigmoid losses."""

from __future__ import annotations

import math

import pytest
import torch
from torchvision.models.detection.faster_rcnn import FastRCNNPredictor
from torchvision.models.detection.roi_heads import RoIHeads

from drcl.detection.roi_heads import CosineFastRCNNPredictor, LongTailRoIHeads
from drcl.finetune.runner import detector_for
from drcl.losses.longtail import build_classification_loss


def _images_targets():
    g = torch.Generator().manual_seed(0)
    images = [torch.rand(3, 64, 64, generator=g), torch.rand(3, 56, 64, generator=g)]
    masks0 = torch.zeros(2, 64, 64, dtype=torch.uint8)
    masks0[0, 4:30, 6:28] = 1
    masks0[1, 30:60, 30:62] = 1
    targets = [
        {
            "boxes": torch.tensor([[6.0, 4.0, 28.0, 30.0], [30.0, 30.0, 62.0, 60.0]]),
            "labels": torch.tensor([1, 3]),
            "masks": masks0,
        },
        {  # an image without objects
            "boxes": torch.zeros(0, 4),
            "labels": torch.zeros(0, dtype=torch.int64),
            "masks": torch.zeros(0, 56, 64, dtype=torch.uint8),
        },
    ]
    return images, targets


def _torchvision_heads(h: LongTailRoIHeads) -> RoIHeads:
    return RoIHeads(
        h.box_roi_pool,
        h.box_head,
        h.box_predictor,
        h.proposal_matcher.high_threshold,
        h.proposal_matcher.low_threshold,
        h.fg_bg_sampler.batch_size_per_image,
        h.fg_bg_sampler.positive_fraction,
        h.box_coder.weights,
        h.score_thresh,
        h.nms_thresh,
        h.detections_per_img,
        mask_roi_pool=h.mask_roi_pool,
        mask_head=h.mask_head,
        mask_predictor=h.mask_predictor,
    )


def _features_and_proposals(model, images, targets):
    images_t, targets_t = model.transform(images, targets)
    features = model.backbone(images_t.tensors)
    proposals, _ = model.rpn(images_t, features, targets_t)
    return features, [p.detach() for p in proposals], images_t.image_sizes, targets_t


def test_softmax_ce_heads_equal_torchvision(tiny_config):
    torch.manual_seed(0)
    model = detector_for(tiny_config("mask_rcnn", "ce"), num_classes=4).train()
    ours, theirs = model.roi_heads, _torchvision_heads(model.roi_heads)
    images, targets = _images_targets()
    feats, props, sizes, tgts = _features_and_proposals(model, images, targets)
    torch.manual_seed(1)
    _, loss_ours = ours(feats, props, sizes, tgts)
    torch.manual_seed(1)
    _, loss_theirs = theirs(feats, props, sizes, tgts)
    assert set(loss_ours) == set(loss_theirs) == {"loss_classifier", "loss_box_reg", "loss_mask"}
    for key in loss_ours:
        assert torch.allclose(loss_ours[key], loss_theirs[key], atol=1e-6), key
    ours.eval(), theirs.eval()
    with torch.no_grad():
        det_ours, _ = ours(feats, props, sizes)
        det_theirs, _ = theirs(feats, props, sizes)
    for a, b in zip(det_ours, det_theirs, strict=True):
        assert a.keys() == b.keys() == {"boxes", "labels", "scores", "masks"}
        for key in a:
            assert torch.allclose(a[key], b[key], atol=1e-6), key


def _single_box_heads(loss_name: str, num_classes: int = 3) -> LongTailRoIHeads:
    freqs = torch.ones(num_classes)
    return LongTailRoIHeads(
        None,
        None,
        FastRCNNPredictor(8, num_classes + 1),
        0.5,
        0.5,
        16,
        0.25,
        None,
        1e-4,
        0.5,
        300,
        cls_loss=build_classification_loss(loss_name, num_classes, freqs),
    )


@pytest.mark.parametrize(
    ("loss_name", "expected"),
    [
        ("ce", lambda z: torch.softmax(z, 0)[1:]),
        ("bce", lambda z: torch.sigmoid(z[1:])),
        ("ecm", lambda z: torch.sigmoid(z[1:]) * (1 - torch.sigmoid(z[0]))),
        ("seesaw", lambda z: torch.softmax(z[1:], 0) * torch.sigmoid(-z[0])),
    ],
)
def test_postprocess_uses_the_losses_scores(loss_name, expected):
    heads = _single_box_heads(loss_name)
    z = torch.tensor([5.0, 0.0, 2.0, -1.0])
    box = torch.tensor([[10.0, 10.0, 40.0, 30.0]])
    boxes, scores, labels = heads.postprocess_detections(
        z[None], torch.zeros(1, 16), [box], [(64, 64)]
    )
    want = expected(z)
    assert labels[0].tolist() == (torch.argsort(want, descending=True) + 1).tolist()
    assert torch.allclose(scores[0], want.sort(descending=True).values, atol=1e-6)
    assert torch.allclose(boxes[0], box.expand(3, 4))
    # The sigmoid score of class 2 is sigmoid(2) = 0.88, far from the softmax one.
    if loss_name == "bce":
        assert scores[0][0].item() == pytest.approx(1 / (1 + math.exp(-2.0)), rel=1e-6)


def test_postprocess_caps_detections_and_applies_threshold():
    heads = _single_box_heads("bce", num_classes=3)
    heads.detections_per_img, heads.score_thresh = 7, 0.3
    g = torch.Generator().manual_seed(0)
    xy = torch.rand(50, 2, generator=g) * 40
    props = torch.cat([xy, xy + 5 + torch.rand(50, 2, generator=g) * 20], 1)
    z = torch.randn(50, 4, generator=g)
    _, scores, labels = heads.postprocess_detections(z, torch.zeros(50, 16), [props], [(64, 64)])
    assert len(scores[0]) == 7
    assert torch.all(scores[0] > 0.3) and torch.all(scores[0][:-1] >= scores[0][1:])
    assert labels[0].min() >= 1 and labels[0].max() <= 3


def test_postprocess_with_no_proposals():
    heads = _single_box_heads("ce")
    boxes, scores, labels = heads.postprocess_detections(
        torch.zeros(0, 4), torch.zeros(0, 16), [torch.zeros(0, 4)], [(64, 64)]
    )
    assert boxes[0].shape == (0, 4) and scores[0].numel() == 0 and labels[0].numel() == 0


def test_cosine_predictor_range_and_scale_invariance():
    torch.manual_seed(0)
    pred = CosineFastRCNNPredictor(16, 6, scale=20.0)
    x = torch.randn(32, 16) * 50
    logits, deltas = pred(x)
    assert logits.shape == (32, 6) and deltas.shape == (32, 24)
    assert logits.abs().max() <= 20.0 + 1e-4
    assert torch.allclose(pred(x * 7.0)[0], logits, atol=1e-4)  # independent of |x|
    # Aligned input reaches the bound.
    w = pred.cls_score.weight[2].detach()
    assert pred(w[None] * 3)[0][0, 2].item() == pytest.approx(20.0, rel=1e-5)
    assert set(pred.state_dict()) == {"cls_score.weight", "bbox_pred.weight", "bbox_pred.bias"}


def test_mismatched_loss_and_predictor_is_rejected():
    with pytest.raises(ValueError, match="cls_loss is for 5 classes"):
        LongTailRoIHeads(
            None,
            None,
            FastRCNNPredictor(8, 4),
            0.5,
            0.5,
            16,
            0.25,
            None,
            0.05,
            0.5,
            100,
            cls_loss=build_classification_loss("ce", 5),
        )
