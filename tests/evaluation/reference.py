"""A slow, direct implementation of the LVIS / COCO AP rules, independent of faster-coco-eval.

Written from the protocol (COCO ``cocoeval.py`` semantics, LVIS ``LVISEval`` rules): plain Python
loops, IoU computed by hand (boxes) or on decoded numpy masks (segm).
"""

from __future__ import annotations

import math
import warnings
from collections import defaultdict

import numpy as np
from pycocotools import mask as pmask

IOU_THRS = np.linspace(0.5, 0.95, 10)
REC_THRS = np.linspace(0.0, 1.0, 101)
AREAS = [(0.0, 1e10), (0.0, 32.0**2), (32.0**2, 96.0**2), (96.0**2, 1e10)]


def box_iou(d, g, crowd):
    """IoU of xywh boxes; for a crowd gt the union is the detection's area."""
    iw = max(0.0, min(d[0] + d[2], g[0] + g[2]) - max(d[0], g[0]))
    ih = max(0.0, min(d[1] + d[3], g[1] + g[3]) - max(d[1], g[1]))
    inter = iw * ih
    union = d[2] * d[3] if crowd else d[2] * d[3] + g[2] * g[3] - inter
    return inter / union if union > 0 else 0.0


def decode(segm, h, w):
    if isinstance(segm, list):
        rle = pmask.merge(pmask.frPyObjects(segm, h, w))
    else:
        rle = dict(segm)
        if isinstance(rle["counts"], str):
            rle["counts"] = rle["counts"].encode()
    with warnings.catch_warnings():  # pycocotools' numpy-2 copy-keyword DeprecationWarning
        warnings.simplefilter("ignore", DeprecationWarning)
        return pmask.decode(rle).astype(bool)


def mask_iou(d, g, crowd):
    inter = np.logical_and(d, g).sum()
    union = d.sum() if crowd else np.logical_or(d, g).sum()
    return float(inter / union) if union > 0 else 0.0


def cap_per_image(dets, k):
    """Top-k by score of each image, ties keep input order (Python's sort is stable)."""
    by_img = defaultdict(list)
    for i, d in enumerate(dets):
        by_img[d["image_id"]].append(i)
    keep = set()
    for idx in by_img.values():
        keep.update(sorted(idx, key=lambda i: -dets[i]["score"])[:k])
    return [d for i, d in enumerate(dets) if i in keep]


def _match_image(gts, dts, ious, area, thr, not_exhaustive):
    """Greedy matching of one (image, class, area, IoU threshold); COCO's evaluateImg."""
    lo, hi = area
    g_ig = [bool(g.get("iscrowd", 0)) or g["area"] < lo or g["area"] > hi for g in gts]
    g_order = sorted(range(len(gts)), key=lambda j: g_ig[j])  # non-ignored first, stable
    g_matched = [False] * len(gts)
    out = []  # (score, matched, ignored)
    for di, d in enumerate(dts):
        best, m = min(thr, 1 - 1e-10), -1
        for j in g_order:
            if g_matched[j] and not gts[j].get("iscrowd", 0):
                continue
            if m > -1 and not g_ig[m] and g_ig[j]:
                break
            if ious[di][j] < best:
                continue
            best, m = ious[di][j], j
        if m > -1:
            g_matched[m] = True
            out.append((d["score"], True, g_ig[m]))
        else:
            ignored = d["area"] < lo or d["area"] > hi or not_exhaustive
            out.append((d["score"], False, ignored))
    return out, sum(not x for x in g_ig)


def _precision_curve(records, npig):
    """101-point interpolated precision of (score, matched, ignored) records."""
    recs = sorted(records, key=lambda r: -r[0])  # stable
    tp = fp = 0
    rc, pr = [], []
    for _, matched, ignored in recs:
        if ignored:
            continue
        tp += matched
        fp += not matched
        rc.append(tp / npig)
        pr.append(tp / (tp + fp))
    for i in range(len(pr) - 1, 0, -1):
        pr[i - 1] = max(pr[i - 1], pr[i])
    q = np.zeros(len(REC_THRS))
    for r, t in enumerate(REC_THRS):
        i = next((i for i, x in enumerate(rc) if x >= t), None)
        q[r] = pr[i] if i is not None else 0.0
    return q


def _prepare(gt, dets, iou_type):
    sizes = {im["id"]: (im["height"], im["width"]) for im in gt["images"]}
    dets = [dict(d) for d in dets]
    for d in dets:
        if iou_type == "segm":
            h, w = sizes[d["image_id"]]
            d["mask"] = decode(d["segmentation"], h, w)
            d["area"] = float(d["mask"].sum())
        else:
            d["area"] = d["bbox"][2] * d["bbox"][3]
    gts = [dict(g) for g in gt["annotations"]]
    if iou_type == "segm":
        for g in gts:
            h, w = sizes[g["image_id"]]
            g["mask"] = decode(g["segmentation"], h, w)
    return gts, dets


def reference_precision(
    gt,
    dets,
    iou_type="bbox",
    rules="lvis",
    max_dets=300,
    cap=True,
    federated=True,
    not_exhaustive=True,
):
    """Precision (T, R, K, A) with -1 for classes without gt; switches turn single rules off."""
    lvis = rules == "lvis"
    max_det = max_dets if lvis else 100
    if lvis and cap:
        dets = cap_per_image(dets, max_dets)
    gts, dets = _prepare(gt, dets, iou_type)
    has_fed = any(
        "neg_category_ids" in im or "not_exhaustive_category_ids" in im for im in gt["images"]
    )
    imgs = {im["id"]: im for im in gt["images"]}
    pos = defaultdict(set)
    for g in gts:
        pos[g["image_id"]].add(g["category_id"])
    if lvis and federated and has_fed:
        dets = [
            d
            for d in dets
            if d["category_id"] in pos[d["image_id"]]
            or d["category_id"] in imgs[d["image_id"]].get("neg_category_ids", [])
        ]
    cat_ids = sorted(c["id"] for c in gt["categories"])
    out = -np.ones((len(IOU_THRS), len(REC_THRS), len(cat_ids), len(AREAS)))
    for k, cat in enumerate(cat_ids):
        for a, area in enumerate(AREAS):
            for t, thr in enumerate(IOU_THRS):
                records, npig = [], 0
                for img in sorted(imgs):
                    g = [x for x in gts if x["image_id"] == img and x["category_id"] == cat]
                    d = [x for x in dets if x["image_id"] == img and x["category_id"] == cat]
                    d = sorted(d, key=lambda x: -x["score"])[:max_det]
                    if not g and not d:
                        continue
                    ious = [[_iou(x, y, iou_type) for y in g] for x in d]
                    ne = (
                        lvis
                        and not_exhaustive
                        and cat in imgs[img].get("not_exhaustive_category_ids", [])
                    )
                    recs, n = _match_image(g, d, ious, area, thr, ne)
                    records += recs
                    npig += n
                if npig:
                    out[t, :, k, a] = _precision_curve(records, npig)
    return out


def _iou(d, g, iou_type):
    crowd = bool(g.get("iscrowd", 0))
    if iou_type == "segm":
        return mask_iou(d["mask"], g["mask"], crowd)
    return box_iou(d["bbox"], g["bbox"], crowd)


def class_ap(precision):
    """(K,) AP per class over all areas column; NaN for classes without gt."""
    p = precision[..., 0]
    return np.array(
        [p[:, :, k].mean() if (p[:, :, k] > -1).all() else math.nan for k in range(p.shape[2])]
    )


def mean_ap(aps):
    """Mean over classes with gt; NaN when none."""
    aps = [x for x in aps if not math.isnan(x)]
    return float(np.mean(aps)) if aps else math.nan


def summary(precision):
    """AP, AP50, AP75, APs, APm, APl as per-class means (classes with gt in that range)."""
    out = {}
    p = precision
    out["AP"] = mean_ap(class_ap(p))
    out["AP50"] = mean_ap(
        [p[0, :, k, 0].mean() if p[0, 0, k, 0] > -1 else math.nan for k in range(p.shape[2])]
    )
    out["AP75"] = mean_ap(
        [p[5, :, k, 0].mean() if p[5, 0, k, 0] > -1 else math.nan for k in range(p.shape[2])]
    )
    for a, key in enumerate(("APs", "APm", "APl"), start=1):
        out[key] = mean_ap(
            [p[:, :, k, a].mean() if p[0, 0, k, a] > -1 else math.nan for k in range(p.shape[2])]
        )
    return out
