"""Adaptive Training Sample Selection (Zhang et al., CVPR 2020, Algorithm 1).

torchvision has no ATSS assigner; this is it, vectorised over ground-truth boxes:

1. per FPN level, the ``topk`` anchors whose centres are closest (L2) to the gt centre
   (ties in distance: lower anchor index first, a stable sort, so grids are deterministic);
   Distances are direct differences, as mmdet's ``ATSSAssigner`` computes them, never
   ``torch.cdist``'s matmul shortcut (which reordered near ties: tested);
2. the IoU threshold of the gt is ``mean + std`` of its candidates' IoUs (std unbiased, as the
   official code's ``torch.std``). With a single candidate drcl takes std = 0 (the candidate is
   positive when its centre is inside the gt), where mmdet's ``torch.std`` of one value is NaN
   and the gt gets no positive. Only a pyramid with one anchor in all can have one candidate:
   drcl's ATSS has 5 levels, so every gt has at least 5 and the rule never applies there;
3. a candidate is positive if its IoU >= the threshold and its centre lies inside the gt
   (every side distance > ``eps`` = 0.01, as the official code);
4. an anchor positive for several gts goes to the one with the highest IoU (ties: lowest gt
   index).
"""

from __future__ import annotations

import torch
from torch import Tensor
from torchvision.ops import box_iou

__all__ = ["atss_assign"]


def _centers(boxes: Tensor) -> Tensor:
    return (boxes[:, :2] + boxes[:, 2:]) / 2


def _sq_distances(points: Tensor, centers: Tensor) -> Tensor:
    """(A, G) squared L2 distances from direct differences (mmdet's ``ATSSAssigner`` form).

    Not ``torch.cdist``: its ``|a|^2 + |b|^2 - 2ab`` matmul shortcut loses the small distances
    to cancellation (up to 0.22 px in float32 at 1333 x 800) and reorders near-tied candidates.
    Squared, since the order is the same and the square root would only add rounding.
    """
    return (points[:, None, :] - centers[None, :, :]).pow(2).sum(-1)


def _candidates(dist: Tensor, num_anchors_per_level: list[int], topk: int) -> Tensor:
    """(K, G) anchor indices: the ``topk`` closest per level, levels stacked."""
    picked, start = [], 0
    for n in num_anchors_per_level:
        order = torch.sort(dist[start : start + n], dim=0, stable=True).indices
        picked.append(order[: min(topk, n)] + start)
        start += n
    return torch.cat(picked, dim=0)


def atss_assign(
    anchors: Tensor,
    num_anchors_per_level: list[int],
    gt_boxes: Tensor,
    topk: int = 9,
    eps: float = 0.01,
) -> Tensor:
    """Assign each anchor to a gt box or to background.

    Args:
        anchors: (A, 4) xyxy, levels concatenated in order (P3 first).
        num_anchors_per_level: anchors of each level; sums to A.
        gt_boxes: (G, 4) xyxy; G may be 0.
        topk: candidates per level and gt (k = 9 in the paper).
        eps: a centre is inside a gt when all four distances to its sides exceed ``eps``.

    Returns:
        (A,) int64: the matched gt index, or -1 for background.
    """
    if sum(num_anchors_per_level) != anchors.shape[0]:
        raise ValueError(
            f"num_anchors_per_level sums to {sum(num_anchors_per_level)}, "
            f"but there are {anchors.shape[0]} anchors"
        )
    num_anchors = anchors.shape[0]
    matched = torch.full((num_anchors,), -1, dtype=torch.int64, device=anchors.device)
    if gt_boxes.numel() == 0 or num_anchors == 0:
        return matched
    ious = box_iou(anchors, gt_boxes)  # (A, G)
    anchor_ctr = _centers(anchors)
    cand = _candidates(_sq_distances(anchor_ctr, _centers(gt_boxes)), num_anchors_per_level, topk)
    cand_ious = ious.gather(0, cand)
    std = cand_ious.std(0) if cand.shape[0] > 1 else torch.zeros_like(cand_ious[0])
    threshold = cand_ious.mean(0) + std  # t_g = m_g + v_g
    cx, cy = anchor_ctr[cand, 0], anchor_ctr[cand, 1]  # (K, G)
    sides = torch.stack(
        [cx - gt_boxes[:, 0], cy - gt_boxes[:, 1], gt_boxes[:, 2] - cx, gt_boxes[:, 3] - cy]
    )
    positive = (cand_ious >= threshold[None]) & (sides.min(0).values > eps)
    # IoU of (anchor, gt) where positive, else -inf; candidates of one gt are distinct anchors.
    score = torch.full_like(ious, float("-inf"))
    score.scatter_(0, cand, torch.where(positive, cand_ious, float("-inf")))
    best = score.argmax(dim=1)  # first maximum: ties go to the lowest gt index
    has_pos = torch.isfinite(score.gather(1, best[:, None])[:, 0])
    matched[has_pos] = best[has_pos]
    return matched
