"""The ATSS assigner against a slow reference written from the paper's Algorithm 1.

Zhang et al., "Bridging the gap between anchor-based and anchor-free detection via adaptive
training sample selection", CVPR 2020, Algorithm 1, one gt and one anchor at a time, in Python
floats. Choices the paper leaves open and the official code fixes: distance ties by anchor index,
unbiased std, "centre inside" = every side distance > 0.01, multi-gt ties to the highest IoU
(then the lowest gt index).
"""

from __future__ import annotations

import math

import pytest
import torch

from drcl.detection.atss import atss_assign

EPS = 0.01


def _iou(a, b):
    iw = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    ih = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = iw * ih
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union


def _center(b):
    return ((b[0] + b[2]) / 2, (b[1] + b[3]) / 2)


def reference_atss(anchors, per_level, gts, k=9):
    """Algorithm 1, literally: candidates per level, t_g = m_g + v_g, positives, then argmax IoU."""
    anchors, gts = anchors.tolist(), gts.tolist()
    positive_ious = [dict() for _ in anchors]  # anchor -> {gt: IoU} over the gts it is positive for
    for g, gt in enumerate(gts):
        gc = _center(gt)
        candidates, start = [], 0
        for n in per_level:  # line 3-6: k closest anchor centres on each level
            level = range(start, start + n)
            dist = {a: math.dist(_center(anchors[a]), gc) for a in level}
            candidates += sorted(level, key=lambda a: (dist[a], a))[: min(k, n)]
            start += n
        ious = [_iou(anchors[a], gt) for a in candidates]  # line 7
        mean = sum(ious) / len(ious)  # line 8
        var = sum((v - mean) ** 2 for v in ious) / (len(ious) - 1) if len(ious) > 1 else 0.0
        threshold = mean + math.sqrt(var)  # lines 9-10
        for a, iou in zip(candidates, ious, strict=True):  # lines 11-15
            cx, cy = _center(anchors[a])
            inside = min(cx - gt[0], cy - gt[1], gt[2] - cx, gt[3] - cy) > EPS
            if iou >= threshold and inside:
                positive_ious[a][g] = iou
    out = []
    for cand in positive_ious:  # "assigned to multiple gts: the one with the highest IoU"
        out.append(max(cand, key=lambda g: (cand[g], -g)) if cand else -1)
    return out


def grid_anchors(size=64, strides=(8, 16, 32), scale=8.0):
    boxes, counts = [], []
    for s in strides:
        n = size // s
        c = (torch.arange(n, dtype=torch.float64) + 0.5) * s
        cy, cx = torch.meshgrid(c, c, indexing="ij")
        half = scale * s / 2
        lvl = torch.stack([cx - half, cy - half, cx + half, cy + half], -1).reshape(-1, 4)
        boxes.append(lvl)
        counts.append(lvl.shape[0])
    return torch.cat(boxes), counts


def random_gts(g, n, size=64):
    xy = torch.rand(n, 2, generator=g, dtype=torch.float64) * size * 0.8
    wh = 4 + torch.rand(n, 2, generator=g, dtype=torch.float64) * size * 0.6
    return torch.cat([xy, (xy + wh).clamp(max=size)], 1)


@pytest.mark.parametrize("seed", range(6))
def test_matches_algorithm_1_on_random_boxes(seed):
    g = torch.Generator().manual_seed(seed)
    anchors, counts = grid_anchors()
    gts = random_gts(g, int(torch.randint(1, 9, (1,), generator=g)))
    if seed % 2:  # ties: a duplicated gt (equal IoUs) and a gt centred between anchor centres
        gts = torch.cat([gts, gts[:1], torch.tensor([[8.0, 8.0, 40.0, 40.0]], dtype=gts.dtype)])
    got = atss_assign(anchors, counts, gts, topk=9).tolist()
    assert got == reference_atss(anchors, counts, gts, k=9)
    assert any(v >= 0 for v in got)  # the test exercises positives, not only background


def test_topk_larger_than_a_level_and_single_candidate():
    anchors, counts = grid_anchors(strides=(16, 32, 64))  # levels of 16, 4 and 1 anchors
    gts = torch.tensor([[10.0, 12.0, 50.0, 44.0], [0.0, 0.0, 20.0, 30.0]], dtype=torch.float64)
    assert atss_assign(anchors, counts, gts, topk=9).tolist() == reference_atss(
        anchors, counts, gts, k=9
    )
    # a single anchor: drcl's std 0, threshold = its IoU, a positive (mmdet: NaN std, none);
    # drcl's ATSS has 5 levels, so a gt never has fewer than 5 candidates there
    one, one_count = grid_anchors(strides=(64,))
    assert atss_assign(one, one_count, gts[:1], topk=9).tolist() == [0]


def test_duplicate_gt_goes_to_the_lower_index():
    anchors, counts = grid_anchors()
    gt = torch.tensor([[12.0, 12.0, 52.0, 52.0]], dtype=torch.float64)
    got = atss_assign(anchors, counts, torch.cat([gt, gt]))
    assert (got >= 0).any() and not (got == 1).any()


def test_empty_image_is_all_background():
    anchors, counts = grid_anchors()
    got = atss_assign(anchors, counts, torch.zeros(0, 4, dtype=torch.float64))
    assert got.shape == (anchors.shape[0],) and (got == -1).all()


def test_anchor_count_mismatch_is_named():
    anchors, counts = grid_anchors()
    with pytest.raises(ValueError, match="num_anchors_per_level sums to"):
        atss_assign(anchors, counts[:-1], torch.tensor([[0.0, 0.0, 10.0, 10.0]]))


def _far_anchors(x0=1240.0, y0=700.0, n=12, stride=8.0):
    """One level of 64-px anchors centred near the far corner of a 1333 x 800 image, float32."""
    c = torch.arange(n, dtype=torch.float32) * stride
    cy, cx = torch.meshgrid(y0 + c, x0 + c, indexing="ij")
    half = 4 * stride
    return torch.stack([cx - half, cy - half, cx + half, cy + half], -1).reshape(-1, 4)


def _near_tie_gts(n, seed=0):
    """20-60 px gts centred within 3/128 px of a midpoint between four anchor centres.

    Coordinates are multiples of 1/128, so float32 holds them and their centres exactly: the
    reference (Python floats) and the assigner see the same points, and only the distance
    arithmetic can differ.
    """
    g = torch.Generator().manual_seed(seed)
    i, j = torch.randint(3, 8, (2, n), generator=g)
    dx, dy = torch.randint(-3, 4, (2, n), generator=g) / 128
    w, h = torch.randint(20 * 8, 60 * 8, (2, n), generator=g) / 8
    cx, cy = 1244 + 8 * i + dx, 704 + 8 * j + dy
    return torch.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], 1).float()


def test_near_tied_distances_far_from_the_origin_are_exact():
    # torch.cdist's |a|^2 + |b|^2 - 2ab shortcut errs by up to 0.044 px on these centres and
    # changed 29 of these 300 assignments; direct differences change none
    anchors, gts = _far_anchors(), _near_tie_gts(300)
    counts = [anchors.shape[0]]
    wrong = [
        k
        for k in range(len(gts))
        if atss_assign(anchors, counts, gts[k : k + 1]).tolist()
        != reference_atss(anchors, counts, gts[k : k + 1])
    ]
    assert wrong == []
