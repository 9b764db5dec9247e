"""One-stage detectors: torchvision RetinaNet and FCOS, and ATSS on FCOS's head.

``finetune.arch`` ``retinanet`` / ``fcos`` / ``atss`` builds torchvision's own ``RetinaNet`` /
``FCOS`` classes with our ResNet and an FPN on C3-C5 plus P6/P7 (torchvision's
``LastLevelP6P7`` from P5, mmdetection's ``add_extra_convs='on_output'``): levels P3-P7,
strides 8-128. What is ours:

- the classification loss is pluggable (``finetune.loss`` ``focal`` / ``ecm`` / ``efl``,
  :mod:`drcl.losses.sigmoid_longtail`); the heads output C channels for classes 1..C and the
  detections' labels are shifted back to 1..C (torchvision's COCO models keep an unused
  channel 0 instead);
- ATSS (Zhang et al., CVPR 2020): :func:`~drcl.detection.atss.atss_assign` replaces FCOS's
  centre sampling; one square anchor of side ``atss_anchor_scale * stride`` (8 x stride) per
  location; the head is torchvision's ``FCOSHead`` (4 GN convs per branch, classification,
  ltrb regression, centerness) with bias-free convs as mmdetection's ``ConvModule`` + GN;
  losses as mmdetection's ``atss_r50_fpn_1x``: focal (or a long-tail loss) / #positives, GIoU
  x ``giou_weight`` (2) weighted by the centerness targets / their sum, centerness BCE /
  #positives.

**2DRCL weights.** Pre-training has an FPN on C2-C5 (``inner_blocks.0..3``); here the FPN is
on C3-C5 (``inner_blocks.0..2``), as torchvision's ``retinanet_resnet50_fpn`` and mmdetection's
ATSS (``start_level=1``). The top-down path over C3-C5 is the same computation, so
:func:`adapt_pretrained_state` renames blocks 1..3 to 0..2 and reports the P2 blocks as
unexpected (under ``backbone.fpn_p2.*``). P6/P7 and the heads start fresh.
"""

from __future__ import annotations

import math
import re
from functools import partial

import torch
from torch import Tensor, nn
from torchvision.models.detection import FCOS, RetinaNet
from torchvision.models.detection._utils import BoxLinearCoder
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.models.detection.backbone_utils import BackboneWithFPN
from torchvision.models.detection.fcos import (
    FCOSClassificationHead,
    FCOSHead,
    FCOSRegressionHead,
)
from torchvision.models.detection.retinanet import RetinaNetClassificationHead, RetinaNetHead
from torchvision.ops import generalized_box_iou_loss
from torchvision.ops.feature_pyramid_network import LastLevelP6P7

from drcl.config.schema import ONE_STAGE_ARCHS, FinetuneConfig, ModelConfig
from drcl.detection.atss import atss_assign
from drcl.losses.sigmoid_longtail import DenseClassificationLoss, build_dense_loss
from drcl.models.backbone import build_resnet_body

__all__ = [
    "ATSS",
    "ONE_STAGE_ARCHS",
    "DenseHead",
    "LongTailRetinaNetClassificationHead",
    "OneStageFCOS",
    "OneStageRetinaNet",
    "adapt_pretrained_state",
    "build_one_stage",
    "build_resnet_fpn_p3p7",
    "centerness_targets",
]

STRIDES = (8, 16, 32, 64, 128)  # P3..P7


def build_resnet_fpn_p3p7(
    depth: int, fpn_channels: int, norm: str, trainable_layers: int, weights: str | None
) -> BackboneWithFPN:
    """ResNet + FPN on C3-C5 with P6/P7 from P5; outputs ``'0','1','2','p6','p7'`` (P3-P7)."""
    body = build_resnet_body(depth, norm, trainable_layers, weights)
    c2 = body.inplanes // 8
    return BackboneWithFPN(
        body,
        return_layers={"layer2": "0", "layer3": "1", "layer4": "2"},
        in_channels_list=[c2 * 2, c2 * 4, c2 * 8],
        out_channels=fpn_channels,
        # in == out channels: P6 is computed from P5 (torchvision's use_P5).
        extra_blocks=LastLevelP6P7(fpn_channels, fpn_channels),
    )


# ---- targets shared by the heads ----------------------------------------------------------------


def _anchor_labels(gt_labels: Tensor, matched: Tensor, ignore: int | None = None) -> Tensor:
    """(A,) labels in -1..C: gt label of the matched box, 0 background, -1 where ``ignore``."""
    if gt_labels.numel() == 0:
        labels = torch.zeros_like(matched)
    else:
        labels = torch.where(matched >= 0, gt_labels[matched.clamp(min=0)], 0)
    if ignore is not None:
        labels[matched == ignore] = -1
    return labels


def _anchor_boxes(gt_boxes: Tensor, matched: Tensor) -> Tensor:
    if gt_boxes.numel() == 0:
        return gt_boxes.new_zeros((matched.numel(), 4))
    return gt_boxes[matched.clamp(min=0)]


def centerness_targets(anchors: Tensor, gt_boxes: Tensor) -> Tensor:
    """FCOS centerness of anchor centres in their gt boxes (centres must be inside).

    ``sqrt(min(l, r) / max(l, r) * min(t, b) / max(t, b))`` with l, t, r, b the distances from
    the anchor centre to the gt sides. Args: anchors, gt_boxes: (P, 4) xyxy. Returns (P,).
    """
    cx = (anchors[:, 0] + anchors[:, 2]) / 2
    cy = (anchors[:, 1] + anchors[:, 3]) / 2
    lr = torch.stack([cx - gt_boxes[:, 0], gt_boxes[:, 2] - cx], dim=1)
    tb = torch.stack([cy - gt_boxes[:, 1], gt_boxes[:, 3] - cy], dim=1)
    ratio = (lr.min(1).values / lr.max(1).values) * (tb.min(1).values / tb.max(1).values)
    return ratio.clamp(min=0).sqrt()


# ---- heads ------------------------------------------------------------------------------------


class LongTailRetinaNetClassificationHead(RetinaNetClassificationHead):
    """torchvision's RetinaNet classification head with a pluggable sigmoid loss.

    Anchors between the IoU thresholds are ignored; the loss is normalised by the number of
    positive anchors of the batch (mmdetection), not per image (torchvision).
    """

    def __init__(self, in_channels: int, num_anchors: int, cls_loss: DenseClassificationLoss):
        super().__init__(in_channels, num_anchors, cls_loss.num_classes)
        self.cls_loss = cls_loss

    def compute_loss(self, targets, head_outputs, matched_idxs) -> Tensor:
        labels = torch.cat(
            [
                _anchor_labels(t["labels"], m, self.BETWEEN_THRESHOLDS)
                for t, m in zip(targets, matched_idxs, strict=True)
            ]
        )
        logits = head_outputs["cls_logits"].flatten(0, 1)  # (N * A, C)
        return self.cls_loss(logits, labels, float((labels > 0).sum()))


def _bias_free_convs(seq: nn.Sequential) -> None:
    # mmdetection's ConvModule drops the conv bias before GroupNorm; so do we (exact mmdet keys).
    for i, layer in enumerate(seq):
        if isinstance(layer, nn.Conv2d) and layer.bias is not None:
            conv = nn.Conv2d(layer.in_channels, layer.out_channels, 3, padding=1, bias=False)
            nn.init.normal_(conv.weight, std=0.01)
            seq[i] = conv


# exp(x) is clamped at x <= log(1000 / 16), detectron2's bound on box-size deltas.
_MAX_LOG_DISTANCE = math.log(1000.0 / 16)


class ExpDistanceConv2d(nn.Conv2d):
    """The ltrb regression conv of the ATSS head: distances ``exp(x)`` instead of torchvision
    FCOS's ``relu(x)``.

    After GN + ReLU the tower's features are non-negative and nearly uniform over space. So
    with ``relu`` an output channel can start below zero at every location, and a dead channel
    gets no gradient and never recovers. On the demo, one seed of 2DRCL weights started with
    every channel dead: the GIoU loss stayed at 1 and AP was 0 for all three losses. ``exp`` has
    no dead zone. This is FCOS's original ``exp(s x)``, and ATSS regresses log-scale deltas too.
    The bias starts at log(1/2) and the weights at N(0, 0.01^2), so the first predictions are
    centred on the anchor box (half the anchor side on each side), not equal to it: the weights
    spread the distances. Measured at init over random images, 3 seeds, as fractions of the
    anchor side: median 0.46-0.50, 1st-99th percentile 0.33-0.71 (64 channels, 2 convs, the
    demo) and 0.18-1.03 (256 channels, 4 convs). Only zero weights give the anchor exactly.
    mmdetection's ATSS starts closer to its anchors because its ``DeltaXYWHBBoxCoder`` scales the
    raw outputs by 0.1 / 0.2; its per-level ``Scale`` starts at 1 and changes nothing at init.
    We keep this init: every initial box is 0.4-2x its anchor, a range GIoU trains from, and the
    recorded ATSS runs (docs/finetune.md) used it. torchvision applies ``relu`` after this conv,
    which leaves the positive ``exp(x)`` unchanged. State-dict keys are a plain conv's.
    """

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__(in_channels, out_channels, kernel_size=3, stride=1, padding=1)
        nn.init.normal_(self.weight, std=0.01)
        nn.init.constant_(self.bias, math.log(0.5))

    def forward(self, x: Tensor) -> Tensor:
        return torch.exp(super().forward(x).clamp(max=_MAX_LOG_DISTANCE))


class DenseHead(FCOSHead):
    """torchvision's ``FCOSHead`` (classification, ltrb regression, centerness) with our losses.

    Args:
        in_channels: FPN width.
        cls_loss: the classification loss (C outputs).
        num_convs: GN convs per branch (4).
        giou_weight: GIoU loss weight (ATSS: 2).
        centerness_weighted: weight GIoU by the centerness targets and divide by their sum
            (mmdetection ATSS); else divide by #positives (torchvision FCOS).
        conv_bias: keep torchvision's conv biases (FCOS) or drop them (ATSS, as mmdetection).
        exp_distances: ltrb distances as ``exp(x)`` (ATSS, :class:`ExpDistanceConv2d`) instead
            of torchvision FCOS's ``relu(x)``.
    """

    def __init__(
        self,
        in_channels: int,
        cls_loss: DenseClassificationLoss,
        num_convs: int = 4,
        giou_weight: float = 1.0,
        centerness_weighted: bool = False,
        conv_bias: bool = True,
        exp_distances: bool = False,
    ):
        nn.Module.__init__(self)  # FCOSHead's own parts, with a GroupNorm that fits the width
        # torchvision / mmdetection use 32 groups; a slim demo head (e.g. 16 channels) takes the
        # largest divisor of its width up to 32.
        norm = partial(nn.GroupNorm, math.gcd(32, in_channels))
        c = cls_loss.num_classes
        self.box_coder = BoxLinearCoder(normalize_by_size=True)
        self.classification_head = FCOSClassificationHead(in_channels, 1, c, num_convs, 0.01, norm)
        self.regression_head = FCOSRegressionHead(in_channels, 1, num_convs, norm)
        if not conv_bias:
            _bias_free_convs(self.classification_head.conv)
            _bias_free_convs(self.regression_head.conv)
        if exp_distances:
            self.regression_head.bbox_reg = ExpDistanceConv2d(in_channels, 4)
        self.cls_loss = cls_loss
        self.giou_weight, self.centerness_weighted = giou_weight, centerness_weighted

    def compute_loss(self, targets, head_outputs, anchors, matched_idxs) -> dict[str, Tensor]:
        labels = torch.stack(
            [_anchor_labels(t["labels"], m) for t, m in zip(targets, matched_idxs, strict=True)]
        )
        gt = torch.stack(
            [_anchor_boxes(t["boxes"], m) for t, m in zip(targets, matched_idxs, strict=True)]
        )
        anchors_t = torch.stack(anchors)  # (N, A, 4)
        fg = labels > 0
        num_fg = float(fg.sum())
        loss_cls = self.cls_loss(head_outputs["cls_logits"].flatten(0, 1), labels.flatten(), num_fg)
        pred = self.box_coder.decode(head_outputs["bbox_regression"], anchors_t)[fg]
        ctr = centerness_targets(anchors_t[fg], gt[fg])
        giou = generalized_box_iou_loss(pred.float(), gt[fg], reduction="none")
        if self.centerness_weighted:
            loss_reg = (giou * ctr).sum() / ctr.sum().clamp(min=1.0)
        else:
            loss_reg = giou.sum() / max(num_fg, 1.0)
        ctr_logits = head_outputs["bbox_ctrness"][..., 0][fg]
        loss_ctr = nn.functional.binary_cross_entropy_with_logits(
            ctr_logits.float(), ctr, reduction="sum"
        ) / max(num_fg, 1.0)
        return {
            "classification": loss_cls,
            "bbox_regression": self.giou_weight * loss_reg,
            "bbox_ctrness": loss_ctr,
        }


# ---- detectors --------------------------------------------------------------------------------


class _LabelsFromOne:
    """Heads predict C channels (labels 0..C-1); detections use the dataset's labels 1..C."""

    def postprocess_detections(self, *args, **kwargs):
        detections = super().postprocess_detections(*args, **kwargs)
        for det in detections:
            det["labels"] = det["labels"] + 1
        return detections


class OneStageRetinaNet(_LabelsFromOne, RetinaNet):
    """torchvision ``RetinaNet`` with C class channels (labels 1..C) and a pluggable loss."""


class OneStageFCOS(_LabelsFromOne, FCOS):
    """torchvision ``FCOS`` with C class channels (labels 1..C) and a pluggable loss."""


class ATSS(_LabelsFromOne, FCOS):
    """FCOS-shaped detector trained with the ATSS assigner (torchvision's FCOS inference).

    Args:
        topk: ATSS candidates per level (9).
        other arguments: torchvision ``FCOS``'s.
    """

    def __init__(self, *args, topk: int = 9, **kwargs):
        super().__init__(*args, **kwargs)
        self.topk = topk

    def compute_loss(self, targets, head_outputs, anchors, num_anchors_per_level):
        matched = [
            atss_assign(a, num_anchors_per_level, t["boxes"], self.topk)
            for a, t in zip(anchors, targets, strict=True)
        ]
        return self.head.compute_loss(targets, head_outputs, anchors, matched)


def _dense_loss(
    ft: FinetuneConfig, num_classes: int, class_freqs: Tensor | None
) -> DenseClassificationLoss:
    return build_dense_loss(
        ft.loss,
        num_classes,
        class_freqs,
        focal_alpha=ft.focal_alpha,
        focal_gamma=ft.focal_gamma,
        efl_scale=ft.efl_scale,
        ecm_fg_bg_ratio=ft.ecm_fg_bg_ratio,
    )


def build_one_stage(
    m: ModelConfig,
    ft: FinetuneConfig,
    num_classes: int,
    class_freqs: Tensor | None = None,
    *,
    min_size: int,
    max_size: int,
) -> nn.Module:
    """Build ``finetune.arch`` (``retinanet``, ``fcos`` or ``atss``) on ResNet-FPN P3-P7.

    Args:
        m: the ``model`` section; ft: the ``finetune`` section.
        num_classes: C; the heads have C class channels, detections carry labels 1..C.
        class_freqs: (C,) training image counts in label order; required by ``ecm``.
        min_size, max_size: the detector's resize (``data.min_size`` / ``data.max_size``).
    """
    if ft.arch not in ONE_STAGE_ARCHS:
        raise ValueError(f"finetune.arch: got {ft.arch!r}, allowed: {', '.join(ONE_STAGE_ARCHS)}")
    if num_classes < 1:
        raise ValueError(f"num_classes must be >= 1, got {num_classes}")
    cls_loss = _dense_loss(ft, num_classes, class_freqs)
    backbone = build_resnet_fpn_p3p7(m.depth, m.fpn_channels, m.norm, m.trainable_layers, m.weights)
    common = {
        "min_size": min_size,
        "max_size": max_size,
        # LVIS test protocol: score > 1e-4, 300 detections per image.
        "score_thresh": ft.score_thresh,
        "nms_thresh": ft.nms_thresh,
        "detections_per_img": ft.detections_per_img,
        "topk_candidates": ft.topk_candidates,
    }
    if ft.arch == "retinanet":
        head = RetinaNetHead(m.fpn_channels, 9, num_classes)
        head.classification_head = LongTailRetinaNetClassificationHead(m.fpn_channels, 9, cls_loss)
        return OneStageRetinaNet(backbone, num_classes, head=head, **common)
    if ft.arch == "fcos":
        head = DenseHead(m.fpn_channels, cls_loss, ft.head_convs)
        return OneStageFCOS(backbone, num_classes, head=head, **common)
    sizes = tuple((ft.atss_anchor_scale * s,) for s in STRIDES)
    anchors = AnchorGenerator(sizes, ((1.0,),) * len(sizes))
    head = DenseHead(
        m.fpn_channels, cls_loss, ft.head_convs, ft.giou_weight, True, False, exp_distances=True
    )
    return ATSS(
        backbone, num_classes, anchor_generator=anchors, head=head, topk=ft.atss_topk, **common
    )


# ---- pre-trained weights ----------------------------------------------------------------------

_FPN_BLOCK = re.compile(r"backbone\.fpn\.(inner_blocks|layer_blocks)\.(\d+)\.(.*)")


def adapt_pretrained_state(model: nn.Module, state: dict[str, Tensor]) -> dict[str, Tensor]:
    """Map a C2-C5 FPN (2DRCL pre-training, R-CNNs) onto a C3-C5 FPN model; else unchanged.

    ``backbone.fpn.{inner,layer}_blocks.j`` -> ``j - 1`` for j = 1..3; the C2/P2 blocks (j = 0)
    are renamed ``backbone.fpn_p2.*`` so the load table lists them as unexpected.
    """
    own = model.state_dict()
    four_level = "backbone.fpn.inner_blocks.3.0.weight" in state
    if not four_level or "backbone.fpn.inner_blocks.3.0.weight" in own:
        return state
    out: dict[str, Tensor] = {}
    for key, value in state.items():
        m = _FPN_BLOCK.fullmatch(key)
        if m is None:
            out[key] = value
        elif m[2] == "0":
            out[f"backbone.fpn_p2.{m[1]}.0.{m[3]}"] = value
        else:
            out[f"backbone.fpn.{m[1]}.{int(m[2]) - 1}.{m[3]}"] = value
    return out
