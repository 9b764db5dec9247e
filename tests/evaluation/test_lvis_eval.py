"""evaluate_detections against a slow direct implementation of the LVIS rules and pycocotools."""

import contextlib
import copy
import io
import json
import math

import numpy as np
import pytest
from pycocotools.coco import COCO as PyCOCO
from pycocotools.cocoeval import COCOeval as PyCOCOeval

from drcl.evaluation import evaluate_detections, json_safe
from drcl.evaluation.detections import load_detections
from drcl.evaluation.lvis_eval import accumulate_precision, category_chunks, prepare_ground_truth

from . import reference as ref
from .cases import add_flood, lvis_case, segm_case, train_json

SUMMARY_KEYS = ("AP", "AP50", "AP75", "APs", "APm", "APl")


def _assert_close(a, b, tol=1e-6):
    if math.isnan(b):
        assert math.isnan(a)
    else:
        assert a == pytest.approx(b, abs=tol)


def _check_against_reference(got, precision, gt):
    want = ref.summary(precision)
    for key in SUMMARY_KEYS:
        _assert_close(got[key], want[key])
    aps = ref.class_ap(precision)
    assert [c["id"] for c in got["per_class"]] == sorted(c["id"] for c in gt["categories"])
    for c, ap in zip(got["per_class"], aps, strict=True):
        _assert_close(c["AP"], ap)
    groups = {c["id"]: c.get("frequency") for c in gt["categories"]}
    for g in "rcf":
        want_g = ref.mean_ap(
            [ap for c, ap in zip(got["per_class"], aps, strict=True) if groups[c["id"]] == g]
        )
        _assert_close(got[f"AP{g}"], want_g)


@pytest.fixture(scope="module")
def flooded():
    gt, dets = lvis_case(seed=0)
    return gt, add_flood(gt, dets, n=320)


@pytest.fixture(scope="module")
def flooded_reference(flooded):
    gt, dets = flooded
    return ref.reference_precision(gt, dets)


def test_lvis_rules_match_direct_reference(flooded, flooded_reference):
    gt, dets = flooded
    assert sum(d["image_id"] == 1 for d in dets) > 300
    got = evaluate_detections(gt, dets)
    _check_against_reference(got, flooded_reference, gt)
    assert got["federated"] and got["max_dets"] == 300 and got["groups_source"] == "frequency"
    assert 0.05 < got["AP"] < 0.95  # a non-degenerate case


@pytest.mark.parametrize(
    "switch", [{"cap": False}, {"federated": False}, {"not_exhaustive": False}]
)
def test_each_lvis_rule_matters_in_the_case(flooded, flooded_reference, switch):
    # The case is built so that dropping any single rule changes the per-class APs; so the
    # agreement above really tests the cap, the federated filter and the not-exhaustive rule.
    gt, dets = flooded
    ablated = ref.reference_precision(gt, dets, **switch)
    assert (
        np.abs(ref.class_ap(ablated) - ref.class_ap(flooded_reference))[
            ~np.isnan(ref.class_ap(flooded_reference))
        ].max()
        > 1e-3
    )


def test_max_dets_parameter_is_the_cap(flooded):
    gt, dets = flooded
    got = evaluate_detections(gt, dets, max_dets=50)
    _check_against_reference(got, ref.reference_precision(gt, dets, max_dets=50), gt)


def test_coco_rules_match_pycocotools():
    gt, dets = lvis_case(seed=3, n_images=8)
    for im in gt["images"]:  # a plain COCO json: exhaustive, no federated fields
        del im["neg_category_ids"], im["not_exhaustive_category_ids"]
    got = evaluate_detections(gt, dets, rules="coco")
    with contextlib.redirect_stdout(io.StringIO()):
        coco_gt = PyCOCO()
        coco_gt.dataset = copy.deepcopy(gt)
        coco_gt.createIndex()
        ev = PyCOCOeval(coco_gt, coco_gt.loadRes(copy.deepcopy(dets)), "bbox")
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    for key, value in zip(
        SUMMARY_KEYS, ev.stats[:6], strict=True
    ):  # pycocotools: -1 = no gt in range
        _assert_close(got[key], math.nan if value == -1 else value)
    precision = ev.eval["precision"][..., -1]  # maxDets=100
    for k, c in enumerate(got["per_class"]):
        p = precision[:, :, k, 0]
        _assert_close(c["AP"], p.mean() if (p > -1).all() else math.nan)
    _check_against_reference(got, ref.reference_precision(gt, dets, rules="coco"), gt)


def test_json_without_federated_fields_is_exhaustive():
    # No neg_category_ids anywhere: a detection of a class absent from an image is a false
    # positive (it would be silently dropped if the json were read as federated).
    gt, dets = lvis_case(seed=4)
    for im in gt["images"]:
        del im["neg_category_ids"], im["not_exhaustive_category_ids"]
    got = evaluate_detections(gt, dets)
    assert not got["federated"]
    _check_against_reference(got, ref.reference_precision(gt, dets), gt)


def test_segm_masks_match_reference():
    gt, dets = segm_case(seed=2)
    got = evaluate_detections(gt, dets, iou_type="segm")
    _check_against_reference(got, ref.reference_precision(gt, dets, iou_type="segm"), gt)
    assert got["AP"] > 0.01
    box_gt, _ = segm_case(seed=2)
    assert box_gt["annotations"][0]["segmentation"]  # polygons in the ground truth


def test_groups_and_coco_lt_bins_from_train_ann():
    gt, dets = lvis_case(seed=5, frequency=False)
    ids = sorted(c["id"] for c in gt["categories"])
    # images -> r (<= 10), c (11-100), f (> 100); instances -> bins [1,20),[20,400),[400,8000)
    counts = dict(
        zip(
            ids,
            [
                (3, 5),
                (10, 19),
                (11, 20),
                (100, 399),
                (60, 400),
                (101, 500),
                (150, 7999),
                (101, 101),
            ],
            strict=True,
        )
    )
    got = evaluate_detections(gt, dets, train_ann=train_json(counts))
    want_groups = ["r", "r", "c", "c", "c", "f", "f", "f"]
    want_bins = [1, 1, 2, 2, 3, 3, 3, 2]
    assert [c["group"] for c in got["per_class"]] == want_groups
    assert [c["bin"] for c in got["per_class"]] == want_bins
    assert got["groups_source"] == "train_ann" and got["bins_source"] == "train_ann"
    aps = ref.class_ap(ref.reference_precision(gt, dets))
    for g in "rcf":
        _assert_close(
            got[f"AP{g}"], ref.mean_ap([a for a, x in zip(aps, want_groups, strict=True) if x == g])
        )
    for b in (1, 2, 3):
        _assert_close(
            got[f"AP{b}"], ref.mean_ap([a for a, x in zip(aps, want_bins, strict=True) if x == b])
        )
    assert math.isnan(got["AP4"])  # no class with >= 8000 training instances


def test_no_group_information_gives_nan_groups_and_no_bins():
    gt, dets = lvis_case(seed=6, frequency=False)
    got = evaluate_detections(gt, dets)
    assert all(math.isnan(got[k]) for k in ("APr", "APc", "APf"))
    assert "AP1" not in got and got["groups_source"] is None
    assert not math.isnan(got["AP"])


def test_instance_count_field_gives_bins():
    gt, dets = lvis_case(seed=6)
    for c, n in zip(gt["categories"], [1, 19, 20, 399, 400, 7999, 8000, 0], strict=True):
        c["instance_count"] = n
    got = evaluate_detections(gt, dets)
    assert [c["bin"] for c in got["per_class"]] == [1, 1, 2, 2, 3, 3, 4, None]
    assert got["bins_source"] == "instance_count"
    aps = [c["AP"] for c in got["per_class"]]
    _assert_close(got["AP4"], aps[6] if not math.isnan(aps[6]) else math.nan)


def test_empty_detections():
    gt, _ = lvis_case(seed=7)
    got = evaluate_detections(gt, [])
    have_gt = {a["category_id"] for a in gt["annotations"]}
    for c in got["per_class"]:
        assert c["AP"] == 0.0 if c["id"] in have_gt else math.isnan(c["AP"])
    assert got["AP"] == 0.0 and got["num_detections"] == 0


def test_no_ground_truth_gives_nan():
    gt, dets = lvis_case(seed=7)
    gt["annotations"] = []
    for im in gt["images"]:
        im["neg_category_ids"] = [c["id"] for c in gt["categories"]]
    got = evaluate_detections(gt, dets)
    assert math.isnan(got["AP"]) and all(math.isnan(c["AP"]) for c in got["per_class"])


def test_deterministic_and_inputs_not_modified(flooded):
    gt, dets = flooded
    gt0, dets0 = copy.deepcopy(gt), copy.deepcopy(dets)
    a = json.dumps(json_safe(evaluate_detections(gt, dets)))
    b = json.dumps(json_safe(evaluate_detections(gt, dets)))
    assert a == b
    assert gt == gt0 and dets == dets0


def test_bad_options():
    gt, dets = lvis_case(seed=0)
    with pytest.raises(ValueError, match="iou_type='mask'"):
        evaluate_detections(gt, dets, iou_type="mask")
    with pytest.raises(ValueError, match="rules='voc'"):
        evaluate_detections(gt, dets, rules="voc")
    with pytest.raises(ValueError, match="missing list 'annotations'"):
        evaluate_detections({"images": [], "categories": []}, dets)


def test_class_chunks_give_the_same_precision(flooded):
    gt, dets = flooded
    truth = prepare_ground_truth(gt)
    loaded = load_detections(dets, truth.known, max_per_image=300)
    whole, _ = accumulate_precision(truth, loaded, "bbox", "lvis", 300, 10**9, workers=1)
    assert whole.shape[2] == len(gt["categories"])
    # 1 class per chunk; 3 images' worth of pairs (uneven); in 2 forked processes
    for max_pairs, workers in ((1, 1), (3 * len(gt["images"]), 1), (10**9, 2), (1, 2)):
        chunked, _ = accumulate_precision(truth, loaded, "bbox", "lvis", 300, max_pairs, workers)
        np.testing.assert_array_equal(chunked, whole)


def test_category_chunks_bound_pairs_and_balance_work():
    # class 1: images 0, 1; class 2: image 1; class 3: images 2, 3, 4; class 4: nothing
    cat_of = np.array([1, 1, 2, 3, 3, 3, 1])
    image_of = np.array([0, 1, 1, 2, 3, 4, 0])
    assert category_chunks(cat_of, image_of, [1, 2, 3, 4], 10**9) == [[1, 2, 3, 4]]
    # {1, 2} touch 2 images -> 4 pairs; adding 3 would make 3 x 5 = 15 > 8
    assert category_chunks(cat_of, image_of, [1, 2, 3, 4], 8) == [[1, 2], [3, 4]]
    assert category_chunks(cat_of, image_of, [1, 2, 3, 4], 1) == [[1], [2], [3], [4]]
    # 7 annotations, about 3 chunks: each closes once it would pass ceil(7 / 3) = 3
    assert category_chunks(cat_of, image_of, [1, 2, 3, 4], 10**9, min_chunks=3) == [
        [1],
        [2],
        [3, 4],
    ]


def test_bad_worker_count():
    gt, dets = lvis_case(seed=0)
    with pytest.raises(ValueError, match="workers=0"):
        evaluate_detections(gt, dets, workers=0)


def test_hand_computed_example():
    # The example of docs/evaluation.md, computed by hand:
    # cat (f): TPs with IoU 0.951 and 0.905 (the 0.95-scored miss on image 2 is ignored,
    #   class 1 is not exhaustive there): AP = 1 at IoU 0.50..0.90; at 0.95 only the first
    #   matches -> precision 1 up to recall 0.5 -> 51/101. AP = (9 + 51/101) / 10.
    # okapi (r): an FP (verified negative on image 1) outranks the TP (IoU 0.875): precision
    #   0.5 at recall 1 for IoU 0.50..0.85, 0 above. AP = 8 * 0.5 / 10.
    # zebra (c): no ground truth -> NaN; its detection on an unverified image is dropped.
    gt = {
        "categories": [
            {"id": 1, "name": "cat", "frequency": "f"},
            {"id": 2, "name": "okapi", "frequency": "r"},
            {"id": 3, "name": "zebra", "frequency": "c"},
        ],
        "images": [
            {"id": 1, "height": 100, "width": 100, "neg_category_ids": [2]},
            {"id": 2, "height": 100, "width": 100, "not_exhaustive_category_ids": [1]},
        ],
        "annotations": [
            {"id": 1, "image_id": 1, "category_id": 1, "bbox": [10, 10, 40, 40], "area": 1600},
            {"id": 2, "image_id": 2, "category_id": 1, "bbox": [5, 5, 20, 20], "area": 400},
            {"id": 3, "image_id": 2, "category_id": 2, "bbox": [50, 50, 30, 30], "area": 900},
        ],
    }
    dets = [
        {"image_id": 1, "category_id": 1, "bbox": [11, 10, 40, 40], "score": 0.9},
        {"image_id": 2, "category_id": 1, "bbox": [60, 0, 20, 20], "score": 0.95},
        {"image_id": 2, "category_id": 1, "bbox": [5, 6, 20, 20], "score": 0.5},
        {"image_id": 1, "category_id": 2, "bbox": [60, 60, 20, 20], "score": 0.8},
        {"image_id": 2, "category_id": 2, "bbox": [50, 52, 30, 30], "score": 0.6},
        {"image_id": 1, "category_id": 3, "bbox": [0, 0, 9, 9], "score": 0.7},
    ]
    got = evaluate_detections(gt, dets)
    ap_cat, ap_okapi = (9 + 51 / 101) / 10, 0.4
    assert got["APf"] == pytest.approx(ap_cat, abs=1e-9)
    assert got["APr"] == pytest.approx(ap_okapi, abs=1e-9)
    assert math.isnan(got["APc"])
    assert got["AP"] == pytest.approx((ap_cat + ap_okapi) / 2, abs=1e-9)
    assert got["num_detections"] == 5
