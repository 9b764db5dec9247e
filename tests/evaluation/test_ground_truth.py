"""Ground truth checks before evaluation: required keys, unknown ids warned about, never aliased."""

import copy
import logging

import pytest

from drcl.evaluation import evaluate_detections

from .cases import lvis_case


def _two_image_gt():
    """2 images, classes 10 and 11; image 2 lists neither as positive nor as negative."""
    return {
        "images": [
            {"id": 1, "height": 50, "width": 50, "neg_category_ids": [11, 99]},
            {"id": 2, "height": 50, "width": 50, "neg_category_ids": []},
        ],
        "annotations": [
            {"id": 1, "image_id": 1, "category_id": 10, "bbox": [0, 0, 10, 10], "area": 100},
            {"id": 2, "image_id": 2, "category_id": 11, "bbox": [0, 0, 10, 10], "area": 100},
        ],
        "categories": [{"id": 10, "name": "a"}, {"id": 11, "name": "b"}],
    }


def test_unknown_neg_id_does_not_alias(caplog):
    # Image 1 lists the unknown class 99. Sorted ids [10, 11]: searchsorted(99) == 2 == K, so the
    # old key image 0 * 2 + 2 equalled image 1 * 2 + 0, i.e. "class 10 on image 2": a detection
    # of class 10 on image 2 (neither positive nor negative there) was kept. It must be dropped.
    gt = _two_image_gt()
    dets = [
        {"image_id": 1, "category_id": 10, "bbox": [0, 0, 10, 10], "score": 0.9},  # positive
        {"image_id": 1, "category_id": 11, "bbox": [5, 5, 10, 10], "score": 0.8},  # negative
        {"image_id": 2, "category_id": 10, "bbox": [0, 0, 10, 10], "score": 0.7},  # unverified
    ]
    with caplog.at_level(logging.WARNING):
        out = evaluate_detections(gt, dets)
    assert out["num_detections"] == 2
    assert "1 unknown category ids in neg_category_ids" in caplog.text
    assert "(e.g. 99)" in caplog.text


def test_unknown_annotation_ids_are_warned_and_left_out(caplog):
    gt = _two_image_gt()
    gt["annotations"].append(
        {"id": 3, "image_id": 2, "category_id": 77, "bbox": [1, 1, 5, 5], "area": 25}
    )
    gt["annotations"].append(
        {"id": 4, "image_id": 9, "category_id": 10, "bbox": [1, 1, 5, 5], "area": 25}
    )
    clean = _two_image_gt()
    dets = [{"image_id": 2, "category_id": 11, "bbox": [0, 0, 10, 10], "score": 0.5}]
    with caplog.at_level(logging.WARNING):
        out = evaluate_detections(gt, dets)
    assert "1 annotations with an unknown category_id (e.g. 77)" in caplog.text
    assert "1 annotations with an unknown image_id (e.g. 9)" in caplog.text
    assert out["AP"] == evaluate_detections(clean, dets)["AP"]


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda g: g["annotations"][1].pop("bbox"), "annotation 1: missing required key 'bbox'"),
        (lambda g: g["annotations"][0].pop("image_id"), "annotation 0: missing required key"),
        (lambda g: g["images"][1].pop("id"), "image 1: missing required key 'id'"),
        (lambda g: g["images"][0].update(id="1"), "image 0: field 'id': must be an integer"),
        (lambda g: g["categories"][0].pop("id"), "category 0: missing required key 'id'"),
        (lambda g: g["annotations"][0].update(bbox=[0, 0, 1]), "annotation 0: field 'bbox'"),
        (lambda g: g["images"][0].update(neg_category_ids=3), "image 0: field 'neg_category"),
    ],
)
def test_missing_gt_keys_name_record_and_field(mutate, message):
    gt = copy.deepcopy(_two_image_gt())
    mutate(gt)
    with pytest.raises(ValueError, match=f"<gt>: {message}"):
        evaluate_detections(gt, [])


def test_segm_needs_segmentation():
    gt, _ = lvis_case(seed=0)
    gt["annotations"][0].pop("segmentation", None)
    with pytest.raises(ValueError, match="annotation 0: missing required key 'segmentation'"):
        evaluate_detections(gt, [], iou_type="segm")


def _gt_record():
    return {
        "images": [{"id": 1, "neg_category_ids": [2, 99]}],
        "categories": [{"id": 2}],
        "annotations": [
            {"image_id": 1, "category_id": 2, "bbox": [0, 0, 1, 1]},
            {"image_id": 1, "category_id": 7, "bbox": [0, 0, 1, 1]},
            {"image_id": 5, "category_id": 2, "bbox": [0, 0, 1, 1]},
        ],
    }


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda d: d["images"][0].pop("id"), "gt.json: image 0: missing required key 'id'"),
        (
            lambda d: d["annotations"][1].update(bbox=[0, 0, 1]),
            "gt.json: annotation 1: field 'bbox': must be [x, y, w, h] numbers",
        ),
        (
            lambda d: d["annotations"][0].update(category_id=True),
            "gt.json: annotation 0: field 'category_id': must be an integer",
        ),
        (
            lambda d: d["images"][0].update(neg_category_ids="2"),
            "gt.json: image 0: field 'neg_category_ids': must be a list of ints",
        ),
    ],
)
def test_validate_ground_truth_names_file_record_and_field(change, message):
    from drcl.evaluation.ground_truth import validate_ground_truth

    data = _gt_record()
    validate_ground_truth(data, "gt.json")  # valid as it is
    change(data)
    with pytest.raises(ValueError, match=message.replace("[", r"\[").replace("]", r"\]")):
        validate_ground_truth(data, "gt.json")


def test_drop_unknown_ids_leaves_them_out_and_warns(caplog):
    from drcl.evaluation.ground_truth import drop_unknown_ids

    data = _gt_record()
    before = copy.deepcopy(data)
    with caplog.at_level(logging.WARNING):
        out = drop_unknown_ids(data, "gt.json")
    assert data == before  # a copy: the input is left alone
    assert out["annotations"] == [before["annotations"][0]]
    assert out["images"][0]["neg_category_ids"] == [2]
    assert "unknown category_id" in caplog.text and "unknown image_id" in caplog.text


def test_only_problems_that_break_the_metrics_are_fatal():
    from drcl.data.check import Problem
    from drcl.evaluation.gt_checks import is_fatal

    def problem(field, message, severity="error"):
        return Problem("gt.json", "annotation", 1, field, message, severity)

    assert is_fatal(problem("category_id", "unknown category 7"))
    assert not is_fatal(problem("category_id", "unknown category 7", "warning"))
    assert not is_fatal(problem("file_name", "missing"))  # evaluation reads no image
    assert not is_fatal(problem("bbox", "[0.1, 0.1, 0.2, 0.2] looks normalised"))
    assert not is_fatal(problem("bbox", "[-2, 0, 10, 10] extends outside the 100x80 image"))
    assert is_fatal(problem("bbox", "[-1e+30, 0, 10, 10] extends outside the 100x80 image"))
