"""Detections input: formats, per-rank merging, the per-image cap, and bad-input messages."""

import json
import math
import re
from collections import defaultdict

import numpy as np
import pytest

from drcl.evaluation import evaluate_detections, json_safe
from drcl.evaluation.detections import (
    Detections,
    KnownIds,
    load_detections,
    save_detections,
    top_k_per_image,
)

from .cases import lvis_case

KNOWN = KnownIds(np.array([1, 2, 3]), np.array([10, 11]), {1: (9, 9), 2: (9, 9), 3: (9, 9)})


def _record(**kw):
    rec = {"image_id": 1, "category_id": 10, "bbox": [0, 0, 2, 3], "score": 0.5}
    rec.update(kw)
    return rec


def _slow_top_k(image_id, score, k):
    by_img = defaultdict(list)
    for i, img in enumerate(image_id.tolist()):
        by_img[img].append(i)
    keep = []
    for idx in by_img.values():
        keep += sorted(idx, key=lambda i: -score[i])[:k]  # stable: ties keep input order
    return np.array(sorted(keep), dtype=np.int64)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_top_k_per_image_matches_slow_loop_with_ties(seed):
    rng = np.random.default_rng(seed)
    image_id = rng.integers(0, 7, size=500)
    score = np.round(rng.random(500), 1)  # many ties
    for k in (1, 5, 60, 1000):
        np.testing.assert_array_equal(
            top_k_per_image(image_id, score, k), _slow_top_k(image_id, score, k)
        )
    assert top_k_per_image(np.zeros(0, np.int64), np.zeros(0), 3).shape == (0,)


def test_per_rank_files_merge_like_one_list(tmp_path):
    gt, dets = lvis_case(seed=1)
    rng = np.random.default_rng(0)
    part = rng.integers(0, 3, size=len(dets))  # one image's detections spread over ranks
    for r in range(3):
        with open(tmp_path / f"dets_rank{r}.json", "w") as fh:
            json.dump([d for d, p in zip(dets, part, strict=True) if p == r], fh)
    want = json.dumps(json_safe(evaluate_detections(gt, dets, max_dets=20)))
    paths = [tmp_path / f"dets_rank{r}.json" for r in range(3)]
    assert json.dumps(json_safe(evaluate_detections(gt, paths, max_dets=20))) == want
    glob = str(tmp_path / "dets_rank*.json")
    assert json.dumps(json_safe(evaluate_detections(gt, glob, max_dets=20))) == want


def test_numpy_input_matches_records():
    gt, dets = lvis_case(seed=2)
    arr = np.array([[d["image_id"], *d["bbox"], d["score"], d["category_id"]] for d in dets])
    a = evaluate_detections(gt, arr)
    b = evaluate_detections(gt, dets)
    assert json.dumps(json_safe(a)) == json.dumps(json_safe(b))


def test_save_and_reload_round_trip(tmp_path):
    recs = [_record(score=0.1 * i, image_id=1 + i % 3) for i in range(7)]
    dets = load_detections(recs, KNOWN)
    save_detections(dets, tmp_path / "out.json")
    back = load_detections(str(tmp_path / "out.json"), KNOWN)
    np.testing.assert_array_equal(back.image_id, dets.image_id)
    np.testing.assert_array_equal(back.bbox, dets.bbox)
    np.testing.assert_array_equal(back.score, dets.score)
    empty = load_detections([], KNOWN)
    assert len(empty) == 0 and empty.bbox.shape == (0, 4)
    assert len(Detections.concat([])) == 0


BAD_RECORDS = [
    (_record(image_id=7), "record 2: field 'image_id': unknown image id 7"),
    (_record(category_id=99), "record 2: field 'category_id': unknown category id 99"),
    (_record(image_id=1.5), "record 2: field 'image_id': not an integer"),
    (_record(score=math.nan), "record 2: field 'score': not a finite number"),
    (_record(score=None), "record 2: field 'score': not a finite number"),
    (_record(score="high"), "record 2: field 'score': not a number: 'high' (str)"),
    # strict types: what float() or numpy would silently convert is refused
    (_record(image_id="1"), "record 2: field 'image_id': not an integer: '1' (str)"),
    (_record(category_id="10"), "record 2: field 'category_id': not an integer: '10' (str)"),
    (_record(image_id=1.0), "record 2: field 'image_id': not an integer: 1.0 (float)"),
    (_record(image_id=True), "record 2: field 'image_id': not an integer: True (bool)"),
    (_record(category_id=None), "record 2: field 'category_id': not an integer: None"),
    (_record(score="0.5"), "record 2: field 'score': not a number: '0.5' (str)"),
    (_record(score=True), "record 2: field 'score': not a number: True (bool)"),
    (_record(score=math.inf), "record 2: field 'score': not a finite number"),
    (_record(bbox=["0", 0, 2, 3]), "record 2: field 'bbox': malformed"),
    (_record(bbox=[0, 0, 2, True]), "record 2: field 'bbox': malformed"),
    (_record(bbox=[0, 0, 2, None]), "record 2: field 'bbox': malformed"),
    (_record(bbox=[0, 0, 2, math.nan]), "record 2: field 'bbox': malformed"),
    (_record(bbox=[0, 0, 2, 3, 4]), "record 2: field 'bbox': malformed"),
    (_record(bbox={"x": 0}), "record 2: field 'bbox': malformed"),
    (_record(bbox=[0, 0, 2]), "record 2: field 'bbox': malformed"),
    (_record(bbox=[0, 0, -2, 3]), "record 2: field 'bbox': malformed"),
    (_record(bbox=[0, math.inf, 2, 3]), "record 2: field 'bbox': malformed"),
    (_record(bbox="0 0 2 3"), "record 2: field 'bbox': malformed"),
    ({"image_id": 1, "category_id": 10, "score": 0.1}, "record 2: missing field 'bbox'"),
    ([1, 2, 3], "record 2: expected an object"),
]


@pytest.mark.parametrize("bad,message", BAD_RECORDS)
def test_bad_record_names_file_record_and_field(tmp_path, bad, message):
    path = tmp_path / "rank1.json"
    path.write_text(json.dumps([_record(), _record(), bad, _record()]))
    good = tmp_path / "rank0.json"
    good.write_text(json.dumps([_record()]))
    with pytest.raises(ValueError, match=re.escape(f"{path}: {message}")):
        load_detections([good, path], KNOWN)


@pytest.mark.parametrize("bad,message", BAD_RECORDS)
def test_bad_record_in_python_list(bad, message):
    with pytest.raises(ValueError, match=re.escape(f"<list>: {message}")):
        load_detections([_record(), _record(), bad], KNOWN)


def test_numpy_scalars_and_zero_size_boxes_are_accepted():
    recs = [
        _record(image_id=np.int64(2), category_id=np.int32(11), score=np.float32(0.25)),
        _record(bbox=[np.float64(1), 2, 0, 0], score=1),  # w = h = 0 is allowed, int score too
    ]
    dets = load_detections(recs, KNOWN)
    np.testing.assert_array_equal(dets.image_id, [2, 1])
    np.testing.assert_array_equal(dets.category_id, [11, 10])
    np.testing.assert_allclose(dets.score, [0.25, 1.0])
    np.testing.assert_array_equal(dets.bbox[1], [1, 2, 0, 0])


def test_bad_files(tmp_path):
    (tmp_path / "obj.json").write_text(json.dumps({"annotations": []}))
    with pytest.raises(ValueError, match=r"obj.json: expected a list of detections .*got dict"):
        load_detections(str(tmp_path / "obj.json"), KNOWN)
    (tmp_path / "broken.json").write_text("[{")
    with pytest.raises(ValueError, match=r"broken.json: invalid JSON at line 1"):
        load_detections(str(tmp_path / "broken.json"), KNOWN)
    with pytest.raises(FileNotFoundError, match="no detection file matches"):
        load_detections(str(tmp_path / "nope_*.json"), KNOWN)
    with pytest.raises(FileNotFoundError, match="missing.json: detection file not found"):
        load_detections(str(tmp_path / "missing.json"), KNOWN)


def test_bad_array_and_segm_records():
    with pytest.raises(ValueError, match=r"<array>: expected shape \(N, 7\)"):
        load_detections(np.zeros((3, 6)), KNOWN)
    arr = np.array([[1, 0, 0, 2, 2, 0.5, 10], [2, 0, 0, 2, 2, np.nan, 10]])
    with pytest.raises(ValueError, match="<array>: record 1: field 'score'"):
        load_detections(arr, KNOWN)
    arr[1, 5], arr[1, 6] = 0.3, 12
    with pytest.raises(ValueError, match="<array>: record 1: field 'category_id': unknown"):
        load_detections(arr, KNOWN)
    segm = {"image_id": 1, "category_id": 10, "score": 0.5}
    with pytest.raises(ValueError, match="<list>: record 0: missing field 'segmentation'"):
        load_detections([segm], KNOWN, iou_type="segm")
    with pytest.raises(ValueError, match="record 0: field 'segmentation': expected an RLE"):
        load_detections([dict(segm, segmentation="x")], KNOWN, iou_type="segm")
    rle = {"size": [5, 5], "counts": "e0"}
    with pytest.raises(ValueError, match=r"RLE size \[5, 5\] differs from image 1's size"):
        load_detections([dict(segm, segmentation=rle)], KNOWN, iou_type="segm")
