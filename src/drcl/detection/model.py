"""Fine-tuning detectors: torchvision Faster / Mask R-CNN on our ResNet-FPN, and weight loading.

The detector is torchvision's own ``FasterRCNN`` / ``MaskRCNN`` (same key names as
``fasterrcnn_resnet50_fpn``), with two changes: the box head width is ``model.box_head_dim`` and
``roi_heads`` is :class:`~drcl.detection.roi_heads.LongTailRoIHeads`, whose classification loss
(``finetune.loss``) also decides how test scores are computed. Pre-trained weights (backbone,
FPN, box head, in torchvision's key layout) load with :func:`load_pretrained`, which says what
loaded, what stayed random and what was unexpected.
"""

from __future__ import annotations

import logging
import os

from torch import Tensor, nn
from torchvision.models.detection import FasterRCNN, MaskRCNN
from torchvision.models.detection.faster_rcnn import FastRCNNPredictor, TwoMLPHead
from torchvision.models.detection.mask_rcnn import MaskRCNNHeads, MaskRCNNPredictor

from drcl.config.schema import ARCH_FAMILIES, FinetuneConfig, ModelConfig
from drcl.data.categories import CategoryTable, categories_for_checkpoint
from drcl.detection.class_layers import adapt_class_layers
from drcl.detection.roi_heads import CosineFastRCNNPredictor, LongTailRoIHeads
from drcl.losses.longtail import ClassificationLoss, build_classification_loss, prior_bias
from drcl.models.backbone import build_resnet_fpn
from drcl.utils.weights import LoadReport, load_into, read_state_dict

log = logging.getLogger(__name__)

__all__ = ["LoadReport", "build_detector", "load_pretrained"]

# torchvision's MultiScaleRoIAlign output for boxes (7x7); TwoMLPHead flattens C x 7 x 7.
BOX_POOL_SIZE = 7


def _box_predictor(dim: int, ft: FinetuneConfig, num_classes: int) -> nn.Module:
    if ft.cosine_classifier:
        return CosineFastRCNNPredictor(dim, num_classes + 1, scale=ft.cosine_scale)
    return FastRCNNPredictor(dim, num_classes + 1)


def _mask_modules(ch: int, num_classes: int) -> dict[str, nn.Module]:
    # torchvision's Mask R-CNN head (4 convs + deconv), its width tied to the FPN width:
    # 256 -> exactly maskrcnn_resnet50_fpn; a slim demo FPN gets a slim mask head.
    return {
        "mask_head": MaskRCNNHeads(ch, [ch] * 4, 1),
        "mask_predictor": MaskRCNNPredictor(ch, ch, num_classes + 1),
    }


def detector_kwargs(ft: FinetuneConfig, min_size: int, max_size: int) -> dict:
    """torchvision ``GeneralizedRCNN`` keyword arguments from ``finetune`` (RPN / RoI sampling,
    the LVIS test settings) and the resize; shared by fine-tuning and the box-domain stage."""
    return {
        "min_size": min_size,
        "max_size": max_size,
        "rpn_pre_nms_top_n_train": ft.rpn_pre_nms_top_n_train,
        "rpn_post_nms_top_n_train": ft.rpn_post_nms_top_n_train,
        "rpn_pre_nms_top_n_test": ft.rpn_pre_nms_top_n_test,
        "rpn_post_nms_top_n_test": ft.rpn_post_nms_top_n_test,
        "rpn_batch_size_per_image": ft.rpn_batch_size_per_image,
        "box_batch_size_per_image": ft.box_batch_size_per_image,
        # LVIS test protocol: score >= 1e-4, 300 detections per image, NMS 0.5.
        "box_score_thresh": ft.score_thresh,
        "box_nms_thresh": ft.nms_thresh,
        "box_detections_per_img": ft.detections_per_img,
    }


def build_classifier_loss(
    ft: FinetuneConfig, num_classes: int, class_freqs: Tensor | None
) -> ClassificationLoss:
    """``finetune.loss`` with its options from the ``finetune`` section."""
    return build_classification_loss(
        ft.loss,
        num_classes,
        class_freqs,
        federated_num_classes=ft.federated_num_classes,
        federated_power=ft.federated_power,
        seesaw_p=ft.seesaw_p,
        seesaw_q=ft.seesaw_q,
        ecm_fg_bg_ratio=ft.ecm_fg_bg_ratio,
    )


def build_detector(
    model: ModelConfig,
    finetune: FinetuneConfig,
    num_classes: int,
    class_freqs: Tensor | None = None,
    *,
    min_size: int,
    max_size: int,
) -> nn.Module:
    """Build ``finetune.arch`` on the ResNet-FPN of ``model``.

    Args:
        model: the ``model`` section (depth, FPN width, norm, box head width, weights).
        finetune: the ``finetune`` section (arch, loss and its options, RPN / RoI settings).
        num_classes: C foreground classes; the predictor has C + 1 outputs, background at 0.
        class_freqs: (C,) training image counts per class in label order 1..C; required by
            ``finetune.loss`` ``federated`` and ``ecm`` (not by their test-time scores).
        min_size, max_size: the detector's resize (``data.min_size`` / ``data.max_size``).

    Returns:
        torchvision ``FasterRCNN`` or ``MaskRCNN`` whose ``roi_heads`` is a
        :class:`LongTailRoIHeads`; for ``retinanet`` / ``fcos`` / ``atss`` the one-stage
        detector of :func:`drcl.detection.one_stage.build_one_stage`.
    """
    ft, m = finetune, model  # finetune.arch is an Enum, checked when the config loads
    # ---- hook: one-stage detectors (retinanet / fcos / atss) live in detection/one_stage.py
    from drcl.detection import one_stage

    family = ARCH_FAMILIES[ft.arch]
    if family.one_stage:
        return one_stage.build_one_stage(
            m, ft, num_classes, class_freqs, min_size=min_size, max_size=max_size
        )
    # ----
    if num_classes < 1:
        raise ValueError(f"num_classes must be >= 1, got {num_classes}")
    cls_loss = build_classifier_loss(ft, num_classes, class_freqs)
    backbone = build_resnet_fpn(m.depth, m.fpn_channels, m.norm, m.trainable_layers, m.weights)
    box_head = TwoMLPHead(m.fpn_channels * BOX_POOL_SIZE**2, m.box_head_dim)
    predictor = _box_predictor(m.box_head_dim, ft, num_classes)
    extra = _mask_modules(m.fpn_channels, num_classes) if family.masks else {}
    kwargs = detector_kwargs(ft, min_size, max_size)
    detector = (MaskRCNN if family.masks else FasterRCNN)(
        backbone, box_head=box_head, box_predictor=predictor, **extra, **kwargs
    )
    detector.roi_heads = _long_tail_heads(detector.roi_heads, cls_loss)
    if cls_loss.sigmoid_prior is not None and predictor.cls_score.bias is not None:
        # Sigmoid classifiers start at P(c) = prior for every class (detectron2 / CenterNet2).
        nn.init.constant_(predictor.cls_score.bias, prior_bias(cls_loss.sigmoid_prior))
    return detector


def _long_tail_heads(heads, cls_loss: ClassificationLoss) -> LongTailRoIHeads:
    """Rebuild torchvision's ``RoIHeads`` as ``LongTailRoIHeads`` with the same parts/settings."""
    return LongTailRoIHeads(
        heads.box_roi_pool,
        heads.box_head,
        heads.box_predictor,
        heads.proposal_matcher.high_threshold,
        heads.proposal_matcher.low_threshold,
        heads.fg_bg_sampler.batch_size_per_image,
        heads.fg_bg_sampler.positive_fraction,
        heads.box_coder.weights,
        heads.score_thresh,
        heads.nms_thresh,
        heads.detections_per_img,
        mask_roi_pool=heads.mask_roi_pool,
        mask_head=heads.mask_head,
        mask_predictor=heads.mask_predictor,
        cls_loss=cls_loss,
    )


# ---- pre-trained weights -----------------------------------------------------------------------


def load_pretrained(
    model: nn.Module,
    path: str | os.PathLike,
    verbose: bool = True,
    *,
    categories: CategoryTable | None = None,
    keep_classes: str = "skip",
) -> LoadReport:
    """Load pre-trained weights in torchvision's key layout into a detector; print what happened.

    Keys present in both the file and the model are copied; model keys not in the file stay as
    initialised ("random"); file keys the model lacks are reported as unexpected and ignored.
    An init from a detector with other classes (another count, or another category record
    than ``categories``) has its class-specific layers skipped, or with
    ``keep_classes='match_by_name'`` the rows of the classes both have copied
    (:mod:`drcl.detection.class_layers`); the load table says which.

    Args:
        model: a detector from :func:`build_detector` (or any torchvision ``GeneralizedRCNN``).
        path: ``.safetensors`` (``backbone.body.*``, ``backbone.fpn.*``,
            ``roi_heads.box_head.fc6/fc7.*``) or a torch checkpoint read with ``weights_only``.
        verbose: log :meth:`LoadReport.table` (INFO; the CLI shows it on rank 0).
        categories: the model's training categories (compared with the init's record).
        keep_classes: ``finetune.init_keep_classes``: ``skip`` or ``match_by_name``.

    Raises:
        ValueError: no ``backbone.body.*`` key loaded (wrong file or layout), or a tensor's shape
            differs from the model's (the key and both shapes are named).
    """
    from drcl.detection.one_stage import adapt_pretrained_state

    # hook: a C2-C5 FPN file into a one-stage model's C3-C5 FPN (identity otherwise)
    state = adapt_pretrained_state(model, read_state_dict(path))
    own = model.state_dict()
    if not any(k.startswith("backbone.body.") and k in own for k in state):
        raise ValueError(
            f"{path}: no 'backbone.body.*' key matches the model; expected torchvision's detector "
            f"layout (first keys in the file: {', '.join(list(state)[:3]) or 'none'})"
        )
    source = categories_for_checkpoint(path)
    state, notes = adapt_class_layers(own, state, categories, source, keep_classes)
    hint = "check model.depth / fpn_channels / box_head_dim"
    report = load_into(model, state, strict=False, source=str(path), hint=hint)
    report.notes.extend(notes)
    if verbose:
        log.info("%s", report.table())
    return report
