"""Error breakdown: hand-built cases with known answers and a slow reference implementation."""

import json
import random

import numpy as np
import pytest

from drcl.analysis.errors import (
    COUNT_KEYS,
    ERROR_TYPES,
    category_groups,
    error_breakdown,
    format_error_table,
    plot_error_breakdown,
)

CATS = [
    {"id": 1, "name": "a", "frequency": "r"},
    {"id": 2, "name": "b", "frequency": "c"},
    {"id": 3, "name": "c", "frequency": "f"},
    {"id": 4, "name": "d", "frequency": "f"},
]
A = [0.0, 0.0, 10.0, 10.0]  # the ground-truth box of most cases (xywh, area 100)
FAR = [50.0, 50.0, 10.0, 10.0]


def gt_dict(anns, images=None, cats=CATS):
    images = images or [{"id": 1}]
    for k, a in enumerate(anns):
        a.setdefault("id", k + 1)
        a.setdefault("image_id", 1)
    return {"images": images, "annotations": anns, "categories": cats}


def det(cat, box, score, image_id=1):
    return {"image_id": image_id, "category_id": cat, "bbox": list(box), "score": score}


def counts(res, group):
    return res["groups"][group]["counts"]


def expect(res, group, **nonzero):
    want = dict.fromkeys(COUNT_KEYS, 0) | nonzero
    assert counts(res, group) == want


def test_every_type_once():
    gt = gt_dict([{"category_id": 3, "bbox": A}])
    dets = [
        det(3, A, 0.9),  # correct
        det(3, A, 0.8),  # duplicate of a matched box -> location
        det(3, [0, 0, 10, 3], 0.7),  # same class, IoU 0.3 -> location
        det(4, [0, 0, 10, 9], 0.6),  # other class, IoU 0.9 -> classification
        det(4, [0, 0, 10, 3], 0.5),  # other class, IoU 0.3 -> other
        det(4, [0, 0, 10, 0.5], 0.4),  # IoU 0.05 < t_b -> background
        det(3, FAR, 0.3),  # no overlap -> background
    ]
    res = error_breakdown(gt, dets)
    expect(res, "f", correct=1, location=2, classification=1, other=1, background=2)
    shares = res["groups"]["f"]["shares"]
    assert sum(shares.values()) == pytest.approx(1.0)
    assert shares["location"] == pytest.approx(2 / 7)
    assert res["groups"]["f"]["num_gt"] == 1 and res["groups"]["f"]["missed_share"] == 0.0
    expect(res, "r")
    assert res["groups"]["all"]["counts"] == counts(res, "f")


@pytest.mark.parametrize(
    ("box", "cat", "kind"),
    [
        ([0, 0, 10, 3], 3, "location"),  # pure location error: same class, IoU 0.3
        ([0, 0, 10, 9], 4, "classification"),  # pure class confusion: IoU 0.9, other class
        ([0, 0, 10, 0.5], 3, "background"),  # IoU 0.05
        ([0, 0, 10, 3], 4, "other"),  # other class, IoU 0.3
    ],
)
def test_single_error_leaves_the_gt_missed(box, cat, kind):
    res = error_breakdown(gt_dict([{"category_id": 3, "bbox": A}]), [det(cat, box, 0.5)])
    expect(res, "f", missed=1, **{kind: 1})


def test_thresholds_are_inclusive_and_configurable():
    gt = gt_dict([{"category_id": 3, "bbox": A}])
    assert counts(error_breakdown(gt, [det(3, [0, 0, 10, 5], 0.5)]), "f")["correct"] == 1
    res = error_breakdown(gt, [det(3, [0, 0, 10, 5], 0.5)], t_f=0.6, t_b=0.5)
    expect(res, "f", location=1, missed=1)
    res = error_breakdown(gt, [det(3, [0, 0, 10, 5], 0.5)], t_f=0.7, t_b=0.6)
    expect(res, "f", background=1, missed=1)


def test_grouped_by_predicted_class_missed_by_own_class():
    gt = gt_dict([{"category_id": 3, "bbox": A}])
    res = error_breakdown(gt, [det(1, [0, 0, 10, 9], 0.5), det(2, FAR, 0.4)])
    expect(res, "r", classification=1)
    expect(res, "c", background=1)
    expect(res, "f", missed=1)


def test_federated_negative_counts_unverified_class_is_ignored():
    images = [{"id": 1, "neg_category_ids": [2], "not_exhaustive_category_ids": []}]
    gt = gt_dict([{"category_id": 3, "bbox": A}], images)
    dets = [
        det(2, FAR, 0.9),  # verified negative -> a false positive (background)
        det(1, FAR, 0.8),  # neither positive nor negative -> ignored
        det(1, [0, 0, 10, 9], 0.7),  # ignored too, even though it would be a confusion
        det(2, [0, 0, 10, 9], 0.6),  # negative class on the object -> classification
    ]
    res = error_breakdown(gt, dets)
    expect(res, "c", background=1, classification=1)
    expect(res, "r")
    expect(res, "f", missed=1)
    assert res["ignored"]["federated"] == 2


def test_image_without_neg_list_is_exhaustive():
    gt = gt_dict([{"category_id": 3, "bbox": A}])  # COCO-style image record
    expect(error_breakdown(gt, [det(1, FAR, 0.9)]), "r", background=1)


def test_not_exhaustive_class_counts_only_matches():
    images = [{"id": 1, "neg_category_ids": [], "not_exhaustive_category_ids": [3]}]
    gt = gt_dict([{"category_id": 3, "bbox": A}], images)
    dets = [det(3, A, 0.9), det(3, A, 0.8), det(3, FAR, 0.7), det(3, [0, 0, 10, 3], 0.6)]
    res = error_breakdown(gt, dets)
    expect(res, "f", correct=1)
    assert res["ignored"]["not_exhaustive"] == 3


def test_crowd_region_ignores_same_class_detections_only():
    anns = [{"category_id": 3, "bbox": [0, 0, 100, 100], "iscrowd": 1}]
    gt = gt_dict(anns)
    res = error_breakdown(gt, [det(3, [10, 10, 10, 10], 0.9), det(4, [10, 10, 10, 10], 0.8)])
    expect(res, "f", background=1)  # the crowd is never missed; the class-4 box is a FP
    assert res["ignored"]["crowd"] == 1


def test_top_k_cap_is_applied_before_the_federated_filter():
    images = [{"id": 1, "neg_category_ids": [], "not_exhaustive_category_ids": []}]
    gt = gt_dict([{"category_id": 3, "bbox": A}], images)
    # 300 higher-scoring detections of an unverified class: filtered out later, but they
    # still take the 300 slots, so the correct detection is gone (LVIS: cap, then filter)
    dets = [det(1, FAR, 0.5) for _ in range(300)] + [det(3, A, 0.4)]
    res = error_breakdown(gt, dets)
    expect(res, "f", missed=1)
    assert res["ignored"]["over_max_dets"] == 1 and res["ignored"]["federated"] == 300
    res = error_breakdown(gt, dets, max_dets=301)
    expect(res, "f", correct=1)


def test_top_k_is_per_image_and_min_score():
    images = [{"id": 1}, {"id": 2}]
    gt = gt_dict([{"category_id": 3, "bbox": A, "image_id": 2}], images)
    dets = [det(4, FAR, 0.9)] * 3 + [det(3, A, 0.1, image_id=2)]
    res = error_breakdown(gt, dets, max_dets=1)
    expect(res, "f", background=1, correct=1)
    res = error_breakdown(gt, dets, max_dets=1, min_score=0.5)
    expect(res, "f", background=1, missed=1)
    assert res["ignored"] == {
        "over_max_dets": 2, "below_min_score": 1, "federated": 0, "not_exhaustive": 0, "crowd": 0
    }  # fmt: skip


def test_greedy_by_score_takes_best_unmatched_gt():
    anns = [{"category_id": 3, "bbox": A}, {"category_id": 3, "bbox": [0, 2, 10, 10]}]
    # first detection overlaps GT2 best (IoU 1), GT1 0.67; second: GT2 0.82, GT1 0.56
    dets = [det(3, [0, 2, 10, 10], 0.9), det(3, [0, 1, 10, 10], 0.8), det(3, A, 0.1)]
    res = error_breakdown(gt_dict(anns), dets)
    expect(res, "f", correct=2, location=1)


def test_empty_inputs():
    gt = gt_dict([{"category_id": 3, "bbox": A}, {"category_id": 1, "bbox": FAR}])
    res = error_breakdown(gt, [])
    expect(res, "f", missed=1)
    expect(res, "r", missed=1)
    # no detections: shares unknown (None, printed n/a), not 0.0 (issue 26)
    assert res["groups"]["r"]["shares"] == dict.fromkeys(ERROR_TYPES, None)
    res = error_breakdown(gt_dict([]), [])
    assert res["groups"]["all"]["num_detections"] == 0 and res["groups"]["all"]["num_gt"] == 0
    assert res["groups"]["all"]["missed_share"] is None
    assert "n/a" in format_error_table({"run": res}) and "0.0%" not in format_error_table(
        {"run": res}
    )
    res = error_breakdown(gt_dict([]), [det(2, A, 0.3)])
    expect(res, "c", background=1)


def test_frequency_groups_from_training_counts():
    cats = [{"id": 1}, {"id": 2}, {"id": 3, "frequency": "r"}, {"id": 9}]
    anns = []
    for cid, n_img in ((1, 10), (2, 11), (3, 500)):
        anns += [{"image_id": i, "category_id": cid} for i in range(n_img)]
    anns += [{"image_id": 0, "category_id": 1}]  # a second instance in one image: still 10 images
    train = {"images": [], "annotations": anns, "categories": cats}
    assert category_groups(cats, train) == {1: "r", 2: "c", 3: "r", 9: "r"}
    anns2 = [{"image_id": i, "category_id": 2} for i in range(101)]
    assert category_groups([{"id": 2}], {"annotations": anns2})[2] == "f"
    with pytest.raises(ValueError, match="category 1: no 'frequency'"):
        category_groups(cats)


@pytest.mark.parametrize(
    ("record", "message"),
    [
        ({"image_id": 1, "category_id": 3, "bbox": A}, "detection 1: missing field 'score'"),
        ({"image_id": 1, "category_id": 3, "bbox": [1, 2], "score": 1}, "1: field 'bbox'"),
        ({"image_id": 1, "category_id": "x", "bbox": A, "score": 1}, "field 'category_id' is not"),
        ({"image_id": 7, "category_id": 3, "bbox": A, "score": 1}, "1: field 'image_id' = 7"),
        ({"image_id": 1, "category_id": 8, "bbox": A, "score": 1}, "field 'category_id' = 8"),
        ({"image_id": 1, "category_id": 3, "bbox": [0, 0, -1, 1], "score": 1}, "negative width"),
        ({"image_id": 1, "category_id": 3, "bbox": A, "score": float("nan")}, "non-finite"),
    ],
)  # fmt: skip
def test_bad_detection_is_named(tmp_path, record, message):
    path = tmp_path / "dets.json"
    path.write_text(json.dumps([det(3, A, 0.5), record]))
    with pytest.raises(ValueError, match=message) as err:
        error_breakdown(gt_dict([{"category_id": 3, "bbox": A}]), str(path))
    assert str(path) in str(err.value)


def test_bad_ground_truth_and_params(tmp_path):
    with pytest.raises(ValueError, match="annotation 0: missing field 'bbox'"):
        error_breakdown(gt_dict([{"category_id": 3}]), [])
    with pytest.raises(ValueError, match="annotation 0: field 'category_id' = 5"):
        error_breakdown(gt_dict([{"category_id": 5, "bbox": A}]), [])
    with pytest.raises(ValueError, match="a record of 'images' lacks a numeric 'id'"):
        error_breakdown(gt_dict([], images=[{"file_name": "x"}]), [])
    with pytest.raises(ValueError, match="top-level 'images'"):
        error_breakdown({"annotations": [], "categories": []}, [])
    bad = tmp_path / "gt.json"
    bad.write_text("{not json")
    with pytest.raises(ValueError, match="gt.json: invalid JSON at line 1"):
        error_breakdown(str(bad), [])
    with pytest.raises(ValueError, match="0 < t_b <= t_f <= 1"):
        error_breakdown(gt_dict([]), [], t_f=0.1, t_b=0.5)
    with pytest.raises(ValueError, match="expected a list"):
        error_breakdown(gt_dict([]), {"bbox": A})


# ----------------------------------------------------------------------------- reference


def _iou(a, b):
    ax2, ay2, bx2, by2 = a[0] + a[2], a[1] + a[3], b[0] + b[2], b[1] + b[3]
    iw = max(0.0, min(ax2, bx2) - max(a[0], b[0]))
    ih = max(0.0, min(ay2, by2) - max(a[1], b[1]))
    inter = iw * ih
    union = a[2] * a[3] + b[2] * b[3] - inter
    return inter / union if union > 0 else 0.0, inter


def _reference_type(d, real, crowd, matched, t_f, t_b):
    ious = [_iou(d["bbox"], g["bbox"])[0] for g in real]
    best, best_j = -1.0, None
    for j, g in enumerate(real):
        if g["category_id"] == d["category_id"] and not matched[j] and ious[j] >= t_f:
            if ious[j] > best:
                best, best_j = ious[j], j
    if best_j is not None:
        matched[best_j] = True
        return "correct"
    area = d["bbox"][2] * d["bbox"][3]
    for g in crowd:
        if g["category_id"] == d["category_id"] and area > 0:
            if _iou(d["bbox"], g["bbox"])[1] / area >= t_f:
                return None
    same = [i for i, g in zip(ious, real, strict=True) if g["category_id"] == d["category_id"]]
    if any(
        i >= t_f for i, g in zip(ious, real, strict=True) if g["category_id"] != d["category_id"]
    ):
        return "classification"
    if any(i >= t_b for i in same):
        return "location"
    if all(i < t_b for i in ious):
        return "background"
    return "other"


def reference_breakdown(gt, dets, groups, t_f=0.5, t_b=0.1, max_dets=300):
    """SPEC rules, one detection and one ground truth at a time."""
    out = {g: dict.fromkeys(COUNT_KEYS, 0) for g in "rcf"}
    for img in gt["images"]:
        anns = [a for a in gt["annotations"] if a["image_id"] == img["id"]]
        mine = [(k, d) for k, d in enumerate(dets) if d["image_id"] == img["id"]]
        mine = [d for _, d in sorted(mine, key=lambda kd: (-kd[1]["score"], kd[0]))][:max_dets]
        if "neg_category_ids" in img:
            allowed = {a["category_id"] for a in anns} | set(img["neg_category_ids"])
            mine = [d for d in mine if d["category_id"] in allowed]
        real = [a for a in anns if not a.get("iscrowd", 0)]
        crowd = [a for a in anns if a.get("iscrowd", 0)]
        matched = [False] * len(real)
        for d in mine:
            kind = _reference_type(d, real, crowd, matched, t_f, t_b)
            if kind is None:
                continue
            if kind != "correct" and d["category_id"] in img.get("not_exhaustive_category_ids", []):
                continue
            out[groups[d["category_id"]]][kind] += 1
        for g, m in zip(real, matched, strict=True):
            out[groups[g["category_id"]]]["missed"] += 0 if m else 1
    return out


def random_dataset(seed, n_images=25, n_cats=6):
    rng = random.Random(seed)
    cats = [{"id": c, "frequency": "rcf"[c % 3]} for c in range(1, n_cats + 1)]
    images, anns, dets = [], [], []
    for i in range(1, n_images + 1):
        img = {"id": i}
        if rng.random() < 0.7:  # LVIS-style image
            img["neg_category_ids"] = rng.sample(range(1, n_cats + 1), 2)
            img["not_exhaustive_category_ids"] = rng.sample(range(1, n_cats + 1), 1)
        images.append(img)
        boxes = []
        for _ in range(rng.randint(0, 5)):
            box = [rng.uniform(0, 60), rng.uniform(0, 60), rng.uniform(4, 40), rng.uniform(4, 40)]
            crowd = int(rng.random() < 0.1)
            anns.append({"id": len(anns) + 1, "image_id": i, "category_id": rng.randint(1, n_cats),
                         "bbox": box, "iscrowd": crowd})  # fmt: skip
            boxes.append(box)
        for _ in range(rng.randint(0, 30)):
            if boxes and rng.random() < 0.7:  # jittered copy of a GT box
                b = rng.choice(boxes)
                box = [b[0] + rng.gauss(0, 3), b[1] + rng.gauss(0, 3), b[2] * rng.uniform(0.5, 1.5),
                       b[3] * rng.uniform(0.5, 1.5)]  # fmt: skip
            else:
                box = [
                    rng.uniform(0, 80),
                    rng.uniform(0, 80),
                    rng.uniform(1, 30),
                    rng.uniform(1, 30),
                ]
            score = round(rng.random(), 2)  # ties on purpose: input order breaks them
            dets.append(det(rng.randint(1, n_cats), box, score, image_id=i))
    return {"images": images, "annotations": anns, "categories": cats}, dets


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_matches_slow_reference(seed):
    gt, dets = random_dataset(seed)
    groups = {c["id"]: c["frequency"] for c in gt["categories"]}
    for kwargs in ({}, {"max_dets": 8, "t_f": 0.6, "t_b": 0.2}):
        res = error_breakdown(gt, dets, **kwargs)
        ref = reference_breakdown(gt, dets, groups, **kwargs)
        for g in "rcf":
            assert counts(res, g) == ref[g], (seed, kwargs, g)
        assert sum(res["groups"]["all"]["shares"].values()) == pytest.approx(1.0)


def test_deterministic_and_input_order_of_images_irrelevant():
    gt, dets = random_dataset(5)
    res = error_breakdown(gt, dets)
    rev = dict(gt, images=gt["images"][::-1], annotations=gt["annotations"][::-1])
    assert error_breakdown(rev, dets)["groups"] == res["groups"]
    perm = np.random.default_rng(0).permutation(len(dets))
    # a permutation only reorders ties, which changes nothing when no scores tie
    dets_unique = [dict(d, score=d["score"] + 1e-6 * k) for k, d in enumerate(dets)]
    shuffled = [dets_unique[k] for k in perm]
    assert error_breakdown(gt, shuffled)["groups"] == error_breakdown(gt, dets_unique)["groups"]


def test_plot_and_table(tmp_path):
    gt, dets = random_dataset(3)
    results = {"baseline": error_breakdown(gt, dets), "2drcl": error_breakdown(gt, dets[:5])}
    results["empty"] = error_breakdown(gt, [])
    out = plot_error_breakdown(results, tmp_path / "errors.png")
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["errors.png"]  # no temp file left
    table = format_error_table(results)
    assert "baseline" in table and "2drcl" in table and len(table.splitlines()) == 2 + 3 * 4
    with pytest.raises(ValueError, match="no results"):
        plot_error_breakdown({}, tmp_path / "x.png")
