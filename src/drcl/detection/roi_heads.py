"""torchvision ``RoIHeads`` with a pluggable box classification loss and matching test scores.

torchvision's ``RoIHeads`` hard-codes softmax cross-entropy (``fastrcnn_loss``) and softmax
scores in ``postprocess_detections``. :class:`LongTailRoIHeads` keeps everything else of
torchvision (proposal matching, fg/bg sampling, box coder, mask branch, key names) and asks a
:class:`~drcl.losses.longtail.ClassificationLoss` for both the loss and the per-class scores, so a
sigmoid-trained classifier is also *scored* with sigmoids. Keypoint heads are not supported.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchvision.models.detection.roi_heads import (
    RoIHeads,
    maskrcnn_inference,
    maskrcnn_loss,
)
from torchvision.ops import boxes as box_ops

from drcl.losses.longtail import ClassificationLoss, SoftmaxCELoss

__all__ = ["CosineFastRCNNPredictor", "LongTailRoIHeads", "box_regression_loss"]


class CosineFastRCNNPredictor(nn.Module):
    """Normalised (cosine) classifier + linear box regressor, a drop-in ``FastRCNNPredictor``.

    ``z_c = scale * cos(w_c, x) = scale * <w_c / |w_c|, x / |x|>``, so logits lie in
    ``[-scale, scale]`` and the classifier weight norms (the paper's first bias: rare classes get
    small norms) cannot encode class frequency. Keys: ``cls_score.weight`` (no bias),
    ``bbox_pred.weight/bias`` as torchvision.

    Args:
        in_channels: box head output size.
        num_classes: C + 1 (background included), as torchvision's ``FastRCNNPredictor``.
        scale: temperature ``s`` (``finetune.cosine_scale``).
    """

    def __init__(self, in_channels: int, num_classes: int, scale: float = 20.0):
        super().__init__()
        self.cls_score = nn.Linear(in_channels, num_classes, bias=False)
        self.bbox_pred = nn.Linear(in_channels, num_classes * 4)
        self.scale = scale
        nn.init.normal_(self.cls_score.weight, std=0.01)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """x: (N, D) or (N, D, 1, 1) -> logits (N, C + 1), box deltas (N, 4 (C + 1))."""
        x = x.flatten(start_dim=1)
        cos = F.linear(F.normalize(x, dim=1), F.normalize(self.cls_score.weight, dim=1))
        return self.scale * cos, self.bbox_pred(x)


def box_regression_loss(
    box_regression: Tensor, labels: Tensor, regression_targets: Tensor
) -> Tensor:
    """torchvision's Fast R-CNN box loss: smooth L1 (beta 1/9) on positives, summed / N.

    Args:
        box_regression: (N, 4 (C + 1)) class-specific deltas.
        labels: (N,) in 0..C.
        regression_targets: (N, 4) encoded targets.
    """
    pos = torch.where(labels > 0)[0]
    deltas = box_regression.reshape(box_regression.shape[0], -1, 4)[pos, labels[pos]]
    loss = F.smooth_l1_loss(deltas, regression_targets[pos], beta=1 / 9, reduction="sum")
    return loss / max(labels.numel(), 1)


class LongTailRoIHeads(RoIHeads):
    """``RoIHeads`` whose classification loss and scores come from ``cls_loss``.

    Args:
        *args, **kwargs: torchvision ``RoIHeads`` arguments (box/mask pools, heads, predictors,
            sampling and test settings).
        cls_loss: the loss module; defaults to softmax CE (torchvision's behaviour).
    """

    def __init__(self, *args, cls_loss: ClassificationLoss | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        if self.keypoint_predictor is not None:
            raise ValueError("LongTailRoIHeads does not support keypoint heads")
        num_classes = _num_logits(self.box_predictor) - 1
        self.cls_loss = cls_loss if cls_loss is not None else SoftmaxCELoss(num_classes)
        if self.cls_loss.num_classes != num_classes:
            raise ValueError(
                f"cls_loss is for {self.cls_loss.num_classes} classes, the box predictor has "
                f"{num_classes} (+ background)"
            )

    def forward(
        self,
        features: dict[str, Tensor],
        proposals: list[Tensor],
        image_shapes: list[tuple[int, int]],
        targets: list[dict[str, Tensor]] | None = None,
    ) -> tuple[list[dict[str, Tensor]], dict[str, Tensor]]:
        """Box branch, then the mask branch when present (training: losses; test: detections)."""
        if self.training:
            if targets is None:
                raise ValueError("targets are required in training mode")
            proposals, matched_idxs, labels, reg_targets = self.select_training_samples(
                proposals, targets
            )
        logits, deltas = self._box_outputs(features, proposals, image_shapes)
        if self.training:
            labels_cat = torch.cat(labels)
            losses = {
                "loss_classifier": self.cls_loss(logits, labels_cat),
                "loss_box_reg": box_regression_loss(deltas, labels_cat, torch.cat(reg_targets)),
            }
            if self.has_mask():
                losses["loss_mask"] = self._mask_loss(
                    features, proposals, image_shapes, targets, labels, matched_idxs
                )
            return [], losses
        boxes, scores, classes = self.postprocess_detections(
            logits, deltas, proposals, image_shapes
        )
        result = [
            {"boxes": b, "labels": c, "scores": s}
            for b, s, c in zip(boxes, scores, classes, strict=True)
        ]
        if self.has_mask():
            self._add_masks(features, result, image_shapes)
        return result, {}

    def _box_outputs(
        self, features: dict[str, Tensor], proposals: list[Tensor], image_shapes
    ) -> tuple[Tensor, Tensor]:
        x = self.box_roi_pool(features, proposals, image_shapes)
        return self.box_predictor(self.box_head(x))

    def _mask_logits(self, features, boxes: list[Tensor], image_shapes) -> Tensor:
        x = self.mask_roi_pool(features, boxes, image_shapes)
        return self.mask_predictor(self.mask_head(x))

    def _mask_loss(
        self, features, proposals, image_shapes, targets, labels, matched_idxs
    ) -> Tensor:
        # Masks are trained on positive proposals only (torchvision / Mask R-CNN).
        pos = [torch.where(lab > 0)[0] for lab in labels]
        boxes = [p[i] for p, i in zip(proposals, pos, strict=True)]
        idxs = [m[i] for m, i in zip(matched_idxs, pos, strict=True)]
        logits = self._mask_logits(features, boxes, image_shapes)
        gt_masks = [t["masks"] for t in targets]
        gt_labels = [t["labels"] for t in targets]
        return maskrcnn_loss(logits, boxes, gt_masks, gt_labels, idxs)

    def _add_masks(self, features, result: list[dict[str, Tensor]], image_shapes) -> None:
        logits = self._mask_logits(features, [r["boxes"] for r in result], image_shapes)
        probs = maskrcnn_inference(logits, [r["labels"] for r in result])
        for prob, r in zip(probs, result, strict=True):
            r["masks"] = prob

    def postprocess_detections(
        self,
        class_logits: Tensor,
        box_regression: Tensor,
        proposals: list[Tensor],
        image_shapes: list[tuple[int, int]],
    ) -> tuple[list[Tensor], list[Tensor], list[Tensor]]:
        """torchvision's postprocessing with scores from ``cls_loss.scores`` (N, C).

        Per image: one candidate per (proposal, class), score > ``score_thresh``, non-empty
        box, class-wise NMS at ``nms_thresh``, top ``detections_per_img`` by score.

        Returns:
            boxes (K, 4) xyxy, scores (K,), labels (K,) in 1..C, per image.
        """
        counts = [len(p) for p in proposals]
        n, k4 = box_regression.shape
        # (N, C + 1, 4) even for N = 0 (BoxCoder.decode skips its reshape then); drop background.
        pred_boxes = self.box_coder.decode(box_regression, proposals).reshape(n, k4 // 4, 4)[:, 1:]
        scores = self.cls_loss.scores(class_logits.float())
        out: tuple[list[Tensor], list[Tensor], list[Tensor]] = ([], [], [])
        for boxes, sc, shape in zip(
            pred_boxes.split(counts), scores.split(counts), image_shapes, strict=True
        ):
            labels = torch.arange(1, sc.shape[1] + 1, device=sc.device).expand_as(sc)
            boxes = box_ops.clip_boxes_to_image(boxes, shape).reshape(-1, 4)
            sc, labels = sc.reshape(-1), labels.reshape(-1)
            keep = torch.where(sc > self.score_thresh)[0]
            boxes, sc, labels = boxes[keep], sc[keep], labels[keep]
            keep = box_ops.remove_small_boxes(boxes, min_size=1e-2)
            boxes, sc, labels = boxes[keep], sc[keep], labels[keep]
            keep = box_ops.batched_nms(boxes, sc, labels, self.nms_thresh)[
                : self.detections_per_img
            ]
            for lst, t in zip(out, (boxes[keep], sc[keep], labels[keep]), strict=True):
                lst.append(t)
        return out


def _num_logits(predictor: nn.Module) -> int:
    return predictor.cls_score.out_features
