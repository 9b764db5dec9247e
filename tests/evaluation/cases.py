"""Hand-built LVIS-format cases (small, seeded) for the evaluation tests."""

from __future__ import annotations

import numpy as np
from pycocotools import mask as pmask

FREQS = "rrcccfff"  # 8 classes: 2 rare, 3 common, 3 frequent


def _box(rng, size_range, img_size):
    w, h = rng.uniform(*size_range, 2)
    x = rng.uniform(0, img_size - w)
    y = rng.uniform(0, img_size - h)
    return [float(x), float(y), float(w), float(h)]


def _jitter(rng, box, sigma):
    x, y, w, h = box
    d = rng.normal(0, sigma, 4) * np.array([w, h, w, h])
    return [float(x + d[0]), float(y + d[1]), float(max(1.0, w + d[2])), float(max(1.0, h + d[3]))]


def lvis_case(seed=0, n_images=8, img_size=300, frequency=True, crowd=True):
    """Images with positives, verified negatives and not-exhaustive classes; boxes of all sizes.

    Every image lists negatives and not-exhaustive classes, so the federated rules matter;
    image 1 gets a crowd box (if ``crowd``).
    """
    rng = np.random.default_rng(seed)
    cats = [{"id": 10 + i, "name": f"class{i}"} for i in range(len(FREQS))]
    if frequency:
        for c, f in zip(cats, FREQS, strict=True):
            c["frequency"] = f
    cat_ids = [c["id"] for c in cats]
    images, anns = [], []
    sizes = [(4, 30), (33, 90), (100, 0.9 * img_size)]  # small, medium, large
    for i in range(1, n_images + 1):
        present = sorted(rng.choice(cat_ids, size=3, replace=False).tolist())
        rest = [c for c in cat_ids if c not in present]
        neg = sorted(rng.choice(rest, size=2, replace=False).tolist())
        not_ex = [present[0]]
        images.append(
            {
                "id": i,
                "height": img_size,
                "width": img_size,
                "file_name": f"{i}.jpg",
                "neg_category_ids": neg,
                "not_exhaustive_category_ids": not_ex,
            }
        )
        for c in present:
            for _ in range(int(rng.integers(1, 4))):
                box = _box(rng, sizes[int(rng.integers(0, 3))], img_size)
                anns.append(
                    {
                        "id": len(anns) + 1,
                        "image_id": i,
                        "category_id": c,
                        "bbox": box,
                        "area": box[2] * box[3],
                        "iscrowd": 0,
                    }
                )
    if crowd:
        c = anns[0]["category_id"]
        box = [0.0, 0.0, 150.0, 150.0]
        anns.append(
            {
                "id": len(anns) + 1,
                "image_id": 1,
                "category_id": c,
                "bbox": box,
                "area": box[2] * box[3],
                "iscrowd": 1,
            }
        )
    gt = {"images": images, "annotations": anns, "categories": cats}
    return gt, _detections(rng, gt, cat_ids, img_size)


def _detections(rng, gt, cat_ids, img_size):
    """Noisy copies of each gt (some with a wrong class) and random false positives."""
    dets = []
    for a in gt["annotations"]:
        for _ in range(int(rng.integers(1, 4))):
            cat = a["category_id"] if rng.random() < 0.8 else int(rng.choice(cat_ids))
            dets.append(
                {
                    "image_id": a["image_id"],
                    "category_id": cat,
                    "bbox": _jitter(rng, a["bbox"], 0.06),
                    "score": float(rng.random()),
                }
            )
    for im in gt["images"]:
        for _ in range(10):
            dets.append(
                {
                    "image_id": im["id"],
                    "category_id": int(rng.choice(cat_ids)),
                    "bbox": _box(rng, (5, 120), img_size),
                    "score": float(rng.random()),
                }
            )
    return dets


def add_flood(gt, dets, seed=1, image_id=1, n=320, lo=0.5):
    """Flood ``image_id`` with ``n`` high-scored junk detections on its allowed classes.

    The image's own true positives are re-scored below ``lo`` so that the 300 cap cuts them.
    """
    rng = np.random.default_rng(seed)
    im = next(x for x in gt["images"] if x["id"] == image_id)
    pos = sorted({a["category_id"] for a in gt["annotations"] if a["image_id"] == image_id})
    allowed = pos + im["neg_category_ids"]
    out = []
    for d in dets:
        d = dict(d)
        if d["image_id"] == image_id:
            d["score"] = float(d["score"] * lo * 0.99)
        out.append(d)
    for _ in range(n):
        out.append(
            {
                "image_id": image_id,
                "category_id": int(rng.choice(allowed)),
                "bbox": _box(rng, (5, 60), 300),
                "score": float(rng.uniform(lo, 1.0)),
            }
        )
    return out


def poly_of_box(box):
    x, y, w, h = box
    return [[x, y, x + w, y, x + w, y + h, x, y + h]]


S = 160  # image size of the segm case


def segm_case(seed=0):
    """LVIS case with polygon gt masks; detections as compressed RLE (one as a polygon)."""
    gt, dets = lvis_case(seed, n_images=3, img_size=S, crowd=False)
    rng = np.random.default_rng(seed + 100)
    for a in gt["annotations"]:
        x, y, w, h = a["bbox"]
        # a diamond inside the box: a mask that is not its box
        a["segmentation"] = [[x + w / 2, y, x + w, y + h / 2, x + w / 2, y + h, x, y + h / 2]]
        a["area"] = float(pmask.area(pmask.merge(pmask.frPyObjects(a["segmentation"], S, S))))
    out = []
    for i, d in enumerate(dets):
        box = [min(max(v, 0.0), S - 1.0) for v in d["bbox"]]
        mask = np.zeros((S, S), dtype=np.uint8, order="F")
        x0, y0 = int(box[0]), int(box[1])
        x1, y1 = int(min(S, box[0] + box[2])) + 1, int(min(S, box[1] + box[3])) + 1
        mask[y0:y1, x0:x1] = 1
        mask[y0 : y0 + max(1, (y1 - y0) // 4), x0 : x0 + max(1, (x1 - x0) // 4)] = 0
        if i == 0:
            segm = poly_of_box(d["bbox"])
        else:
            rle = pmask.encode(mask)
            segm = {"size": rle["size"], "counts": rle["counts"].decode()}
        out.append(
            {
                "image_id": d["image_id"],
                "category_id": d["category_id"],
                "segmentation": segm,
                "score": d["score"] + rng.uniform(0, 1e-3),
            }
        )
    return gt, out


def train_json(counts):
    """A training json where class ``cid`` appears in ``images`` images with ``instances``
    annotations in total: ``counts = {cid: (images, instances)}``."""
    images, anns = [], []
    next_img = 1
    for cid, (n_img, n_inst) in counts.items():
        ids = list(range(next_img, next_img + n_img))
        next_img += n_img
        images += [{"id": i, "height": 10, "width": 10} for i in ids]
        for j in range(n_inst):
            anns.append(
                {
                    "id": len(anns) + 1,
                    "image_id": ids[j % n_img],
                    "category_id": cid,
                    "bbox": [0, 0, 1, 1],
                    "area": 1.0,
                    "iscrowd": 0,
                }
            )
    cats = [{"id": cid, "name": f"class{cid}"} for cid in counts]
    return {"images": images, "annotations": anns, "categories": cats}
