"""The box-domain pre-training model (AlignDet's box stage, stacked on 2DRCL).

An online and an EMA target copy of one torchvision Faster R-CNN. The ResNet body is initialised
from an image-stage checkpoint (2DRCL) and frozen; the FPN, RPN and RoI box head learn from
pseudo boxes seen in two views (``docs/method.md``, "Box-domain stage"):

- view 1 through the online detector: RPN losses, class-agnostic, on the pseudo boxes of view 1;
  RoIs = RPN proposals + the pseudo boxes themselves, each keeping the id of the pseudo box it
  overlaps with IoU >= ``match_iou`` (positives only);
- view 2 through the target detector (no grad, eval mode): its proposals + pseudo boxes of view 2,
  with the same ids;
- the classifier is an MLP giving an embedding; per-id InfoNCE between online and target RoIs
  (:func:`~drcl.losses.box_contrast.per_id_info_nce`) and L1 box regression to the pseudo boxes,
  summed over the 4 coordinates and divided by the number of RoIs as AlignDet does
  (``pretrain.box.reg_norm``; AlignDet also regresses per class, drcl class-agnostically).

The online detector's keys are torchvision's (``backbone.*``, ``rpn.*``, ``roi_heads.box_head.*``),
so :meth:`BoxDomainModel.export_state_dict` loads straight into a fine-tuning detector; only
``roi_heads.box_predictor`` (embedding + class-agnostic regression) is not exported.
"""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchvision.models.detection import FasterRCNN
from torchvision.models.detection.image_list import ImageList
from torchvision.ops import box_iou

from drcl.config.schema import BoxStageConfig
from drcl.losses.box_contrast import per_id_info_nce
from drcl.models.batch import PretrainBatch
from drcl.models.ema import ema_momentum, ema_update

NOT_EXPORTED = "roi_heads.box_predictor."


class BoxEmbedPredictor(nn.Module):
    """Replaces ``FastRCNNPredictor``: an MLP embedding (fc-ReLU-fc) and a class-agnostic box
    regression, both from the box head's features ``(R, in_dim)``."""

    def __init__(self, in_dim: int, hidden_dim: int, embed_dim: int) -> None:
        super().__init__()
        self.embed = nn.Sequential(
            nn.Linear(in_dim, hidden_dim), nn.ReLU(inplace=True), nn.Linear(hidden_dim, embed_dim)
        )
        self.bbox_pred = nn.Linear(in_dim, 4)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """``x: (R, in_dim)`` -> (embeddings ``(R, embed_dim)``, box deltas ``(R, 4)``)."""
        return self.embed(x), self.bbox_pred(x)


def assign_roi_ids(
    proposals: Tensor, boxes: Tensor, ids: Tensor, iou_thresh: float = 0.5
) -> tuple[Tensor, Tensor, Tensor]:
    """RoIs of one image with the id of the pseudo box they match (positives only).

    The pseudo boxes are added to the proposals (AlignDet), so every pseudo box has a RoI.

    Args:
        proposals: (P, 4) xyxy.
        boxes: (M, 4) xyxy pseudo boxes.
        ids: (M,) int64 unique ids of the pseudo boxes.
        iou_thresh: a RoI matches the pseudo box of highest IoU when that IoU is >= this.

    Returns:
        rois (R, 4), their ids (R,), their matched pseudo boxes (R, 4); R = 0 when M = 0.
    """
    if len(boxes) == 0:
        empty = proposals.new_zeros((0, 4))
        return empty, ids.new_zeros((0,)), empty
    cand = torch.cat([proposals.detach(), boxes])
    best, which = box_iou(cand, boxes).max(dim=1)
    keep = best >= iou_thresh
    return cand[keep], ids[which[keep]], boxes[which[keep]]


class BoxDomainModel(nn.Module):
    """Online + EMA target Faster R-CNN for the box-domain stage.

    Args:
        online: a torchvision Faster R-CNN whose ``roi_heads.box_predictor`` is a
            :class:`BoxEmbedPredictor`, already initialised
            (:func:`drcl.pretrain.box.runner.build_box_model` builds both).
        box_cfg: ``pretrain.box`` (:class:`drcl.config.schema.BoxStageConfig`).
    """

    def __init__(self, online: FasterRCNN, box_cfg: BoxStageConfig) -> None:
        super().__init__()
        self.cfg = box_cfg
        self.online = online
        if box_cfg.freeze_backbone:
            online.backbone.body.requires_grad_(False)
        self.target = copy.deepcopy(online).requires_grad_(False)

    def train(self, mode: bool = True) -> BoxDomainModel:
        """The target always runs in eval mode; a frozen body keeps its BN statistics."""
        super().train(mode)
        self.target.eval()
        if self.cfg.freeze_backbone:
            self.online.backbone.body.eval()
        return self

    def forward(self, batch: PretrainBatch) -> dict[str, Tensor]:
        """Losses of one step.

        Args:
            batch: a :class:`~drcl.models.batch.PretrainBatch`: ``view1``, ``view2``
                (B, 3, S, S); ``boxes1``, ``boxes2`` (B, K, 4) xyxy in each view;
                ``box_valid`` (B, K) bool (box j kept in both views).

        Returns:
            ``loss`` (total), ``loss_objectness``, ``loss_rpn_box_reg``, ``loss_box_contrast``,
            ``loss_box_reg``.
        """
        boxes1, ids = _pseudo_boxes(batch.boxes1, batch.box_valid)
        boxes2, _ = _pseudo_boxes(batch.boxes2, batch.box_valid)
        images1 = _image_list(batch.view1)
        feats = self._features(self.online, images1.tensors)
        proposals, rpn_losses = self.online.rpn(images1, feats, [{"boxes": b} for b in boxes1])
        rois, roi_ids, matched = self._rois(proposals, boxes1, ids)
        emb, deltas = self._roi_outputs(self.online, feats, rois, images1.image_sizes)
        with torch.no_grad():
            images2 = _image_list(batch.view2)
            feats_t = self._features(self.target, images2.tensors)
            proposals_t, _ = self.target.rpn(images2, feats_t)
            rois_t, ids_t, _ = self._rois(proposals_t, boxes2, ids)
            emb_t, _ = self._roi_outputs(self.target, feats_t, rois_t, images2.image_sizes)
        contrast = per_id_info_nce(
            emb, torch.cat(roi_ids), emb_t, torch.cat(ids_t), self.cfg.temperature
        )
        reg = self._box_regression(deltas, rois, matched)
        losses = {
            "loss_objectness": rpn_losses["loss_objectness"],
            "loss_rpn_box_reg": rpn_losses["loss_rpn_box_reg"],
            "loss_box_contrast": self.cfg.contrast_weight * contrast,
            "loss_box_reg": self.cfg.reg_weight * reg,
        }
        return {"loss": sum(losses.values()), **losses}

    def _features(self, det: FasterRCNN, x: Tensor) -> dict[str, Tensor]:
        """FPN levels ``'0'..'3', 'pool'``; the body runs without grad when frozen."""
        if self.cfg.freeze_backbone:
            with torch.no_grad():
                c = det.backbone.body(x)
        else:
            c = det.backbone.body(x)
        return det.backbone.fpn(c)

    def _rois(
        self, proposals: list[Tensor], boxes: list[Tensor], ids: list[Tensor]
    ) -> tuple[list[Tensor], list[Tensor], list[Tensor]]:
        """Per image: id-carrying RoIs, at most ``rois_per_image`` of them (random sample)."""
        out: tuple[list[Tensor], list[Tensor], list[Tensor]] = ([], [], [])
        for props, b, i in zip(proposals, boxes, ids, strict=True):
            rois, roi_ids, matched = assign_roi_ids(props, b, i, self.cfg.match_iou)
            if len(rois) > self.cfg.rois_per_image:
                pick = torch.randperm(len(rois), device=rois.device)[: self.cfg.rois_per_image]
                rois, roi_ids, matched = rois[pick], roi_ids[pick], matched[pick]
            for lst, t in zip(out, (rois, roi_ids, matched), strict=True):
                lst.append(t)
        return out

    def _roi_outputs(
        self, det: FasterRCNN, feats: dict[str, Tensor], rois: list[Tensor], sizes: list
    ) -> tuple[Tensor, Tensor]:
        """RoIAlign 7x7 -> box head -> (embeddings (R, E), deltas (R, 4)); R may be 0."""
        pooled = det.roi_heads.box_roi_pool(feats, rois, sizes)
        return det.roi_heads.box_predictor(det.roi_heads.box_head(pooled))

    def _box_regression(self, deltas: Tensor, rois: list[Tensor], matched: list[Tensor]) -> Tensor:
        """L1 between predicted and encoded (torchvision's BoxCoder) deltas to the pseudo box.

        ``reg_norm=aligndet``: ``sum_{r, k} |d_rk - t_rk| / R`` (AlignDet's mmdet ``L1Loss``
        with ``avg_factor`` = the number of RoIs); ``mean``: the same sum / (4 R), a quarter.
        """
        if deltas.shape[0] == 0:
            return deltas.sum() * 0.0  # keeps the predictor in the graph (DDP)
        targets = torch.cat(self.online.roi_heads.box_coder.encode(matched, rois))
        per_value = F.l1_loss(deltas, targets, reduction="none")  # (R, 4)
        if self.cfg.reg_norm == "mean":
            return per_value.mean()
        return per_value.sum() / deltas.shape[0]

    @torch.no_grad()
    def update_target(self, progress: float) -> float:
        """EMA step with the cosine momentum at ``progress`` in [0, 1]; returns the momentum."""
        m = ema_momentum(progress, self.cfg.momentum, self.cfg.momentum_end)
        ema_update(self.target, self.online, m)
        return m

    def export_state_dict(self) -> dict[str, Tensor]:
        """The online detector in torchvision's layout, without the embedding / agnostic
        regression predictor (fine-tuning builds its own classifier and box predictor)."""
        return {k: v for k, v in self.online.state_dict().items() if not k.startswith(NOT_EXPORTED)}


def _pseudo_boxes(boxes: Tensor, valid: Tensor) -> tuple[list[Tensor], list[Tensor]]:
    """Per image the valid boxes and their batch-unique ids ``b * K + j`` (same in both views).

    Args:
        boxes: (B, K, 4); valid: (B, K) bool.
    """
    num_k = boxes.shape[1]
    slots = torch.arange(boxes.shape[0] * num_k, device=boxes.device).view(-1, num_k)
    boxes_per_image = [b[v] for b, v in zip(boxes, valid, strict=True)]
    return boxes_per_image, [s[v] for s, v in zip(slots, valid, strict=True)]


def _image_list(images: Tensor) -> ImageList:
    """The views are already normalised squares: no resize, no padding."""
    h, w = images.shape[-2:]
    return ImageList(images, [(int(h), int(w))] * images.shape[0])
