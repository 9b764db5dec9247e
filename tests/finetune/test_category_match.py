"""Evaluation maps model labels through the training categories and matches the evaluation
file by id: reordered, shifted (an extra category sorting first), missing and renumbered
categories give the metrics of the matching file, and a renamed id is refused (issue 26).

The model is a stand-in that returns hand-made detections (the training labels of the objects,
plus wrong-class and background boxes), so AP is exact and not trivially 0 or 1; the path from
model output to metrics is the real one (``evaluate_detector`` / ``evaluate_checkpoint``).
"""

from __future__ import annotations

import copy
import json
import logging

import numpy as np
import pytest
import torch
from PIL import Image

from drcl.data.categories import CategoryMismatchError, CategoryTable
from drcl.finetune.job import EvaluateJob
from drcl.finetune.runner import (
    detector_for,
    evaluate_checkpoint,
    evaluate_detector,
    save_detector,
)

TRAIN_CATS = [(3, "car"), (7, "tram"), (11, "bus"), (20, "bike")]  # labels 1..4
SIZES = {101: (48, 64), 205: (64, 64), 307: (64, 40), 409: (40, 56)}  # image id -> (h, w)
# (image, category id, box xywh): two or three objects per image
OBJECTS = [
    (101, 3, [2, 2, 20, 16]),
    (101, 7, [30, 20, 20, 20]),
    (205, 11, [4, 4, 30, 30]),
    (205, 3, [40, 40, 16, 16]),
    (205, 20, [10, 40, 12, 14]),
    (307, 7, [2, 10, 30, 30]),
    (307, 20, [5, 45, 20, 12]),
    (409, 11, [8, 6, 30, 24]),
    (409, 3, [40, 20, 12, 12]),
]


def _write(root):
    rng = np.random.default_rng(0)
    (root / "images").mkdir()
    images = []
    for iid, (h, w) in SIZES.items():
        Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8)).save(
            root / "images" / f"{iid}.png"
        )
        images.append({"id": iid, "file_name": f"{iid}.png", "height": h, "width": w})
    anns = [
        {"id": k + 1, "image_id": i, "category_id": c, "bbox": b, "area": b[2] * b[3]}
        for k, (i, c, b) in enumerate(OBJECTS)
    ]
    cats = [{"id": i, "name": n} for i, n in TRAIN_CATS]
    data = {"images": images, "annotations": anns, "categories": cats}
    (root / "train.json").write_text(json.dumps(data))
    return data


class HandMadeDetector(torch.nn.Module):
    """Per image: every object at its training label (scores vary), a wrong-class copy of it
    and a background box; some wrong-class copies outscore true ones, so AP is in (0, 1)."""

    def __init__(self):
        super().__init__()
        self.by_size = {hw: iid for iid, hw in SIZES.items()}
        self.label = {cid: k + 1 for k, (cid, _) in enumerate(TRAIN_CATS)}

    def forward(self, images):
        return [self._one(tuple(img.shape[1:])) for img in images]

    def _one(self, hw):
        iid = self.by_size[hw]
        boxes, scores, labels = [], [], []
        for k, (i, cid, (x, y, w, h)) in enumerate(OBJECTS):
            if i != iid:
                continue
            label = self.label[cid]
            boxes += [[x, y, x + w, y + h], [x + 1, y, x + w + 1, y + h]]
            scores += [0.5 + 0.05 * k, 0.9 - 0.07 * k]
            labels += [label, label % len(TRAIN_CATS) + 1]
        boxes.append([0.0, 0.0, 4.0, 4.0])
        scores.append(0.3)
        labels.append(1)
        return {
            "boxes": torch.tensor(boxes, dtype=torch.float32),
            "scores": torch.tensor(scores),
            "labels": torch.tensor(labels),
        }


@pytest.fixture
def case(tmp_path, tiny_config):
    train = _write(tmp_path)
    cfg = tiny_config()
    cfg.data.train_ann = str(tmp_path / "train.json")
    cfg.data.val_images = str(tmp_path / "images")
    table = CategoryTable.from_coco(cfg.data.train_ann)
    return cfg, train, table, tmp_path


def _evaluate(case, val, name, allow=False):
    cfg, _, table, root = case
    (root / f"{name}.json").write_text(json.dumps(val))
    cfg = copy.deepcopy(cfg)
    cfg.data.val_ann = str(root / f"{name}.json")
    cfg.data.allow_category_mismatch = allow
    out = root / f"eval_{name}"
    job = EvaluateJob.from_config(cfg, "unused", out)  # the data, detector and device to use
    return evaluate_detector(job, HandMadeDetector(), out, ["bbox"], table)["bbox"]


def _per_class(metrics):
    return {c["id"]: c["AP"] for c in metrics["per_class"]}


def _renumber(val, old, new):
    for c in val["categories"]:
        if c["id"] == old:
            c["id"] = new
    for a in val["annotations"]:
        if a["category_id"] == old:
            a["category_id"] = new
    return val


def test_reordered_categories_give_identical_metrics(case):
    ref = _evaluate(case, case[1], "same")
    assert 0.2 < ref["AP"] < 0.95  # hand-made: neither trivial 0 nor 1
    val = copy.deepcopy(case[1])
    val["categories"] = val["categories"][::-1]
    got = _evaluate(case, val, "reordered")
    for key in ("AP", "AP50", "AP75", "APr", "APc", "APf"):
        assert got[key] == ref[key] or (np.isnan(got[key]) and np.isnan(ref[key]))
    assert _per_class(got) == _per_class(ref)


def test_extra_category_sorting_first_does_not_shift_labels(case, caplog):
    ref = _evaluate(case, case[1], "same")
    val = copy.deepcopy(case[1])
    val["categories"].insert(0, {"id": 1, "name": "truck"})  # position-based mapping: all +1
    with caplog.at_level(logging.WARNING):
        got = _evaluate(case, val, "extra")
    assert got["AP"] == ref["AP"]  # 'truck' has no annotation: not in the mean
    assert {k: v for k, v in _per_class(got).items() if k != 1} == _per_class(ref)
    assert "1 only in extra.json (never predicted): 1" in caplog.text
    assert any("only in extra.json" in n for n in got["notes"])


def test_missing_categories_drop_their_detections_only(case):
    ref = _per_class(_evaluate(case, case[1], "same"))
    val = copy.deepcopy(case[1])
    val["categories"] = [c for c in val["categories"] if c["id"] not in (7, 20)]
    val["annotations"] = [a for a in val["annotations"] if a["category_id"] not in (7, 20)]
    got = _evaluate(case, val, "missing")
    assert _per_class(got) == {3: ref[3], 11: ref[11]}
    dets = json.loads((case[3] / "eval_missing" / "detections_bbox.json").read_text())
    assert {d["category_id"] for d in dets} == {3, 11}


def test_renumbered_category_loses_only_that_class(case):
    ref = _per_class(_evaluate(case, case[1], "same"))
    got = _per_class(_evaluate(case, _renumber(copy.deepcopy(case[1]), 11, 50), "renumbered"))
    assert got == {3: ref[3], 7: ref[7], 20: ref[20], 50: 0.0}


def test_renamed_id_is_refused_unless_allowed(case):
    val = copy.deepcopy(case[1])
    val["categories"][1]["name"] = "tractor"  # id 7 'tram' in training
    with pytest.raises(CategoryMismatchError, match="renamed.json: 1 category id.*id 7: 'tram'"):
        _evaluate(case, val, "renamed")
    assert not (case[3] / "eval_renamed" / "detections_bbox.json").exists()  # refused first
    ref = _evaluate(case, case[1], "same")
    assert _per_class(_evaluate(case, val, "renamed", allow=True)) == _per_class(ref)


def test_shifted_ids_with_nothing_in_common_are_refused(case):
    val = copy.deepcopy(case[1])
    for cid, _ in TRAIN_CATS:
        _renumber(val, cid, cid + 100)
    with pytest.raises(CategoryMismatchError, match="no category id in common"):
        _evaluate(case, val, "shifted")


def test_evaluate_checkpoint_uses_the_record_not_the_val_file(case, caplog):
    """A val file missing two categories used to fail with a cls_score shape error; a file with
    an extra one used to shift every label. The checkpoint's record decides both."""
    cfg, train, table, root = case
    torch.manual_seed(0)
    model = detector_for(cfg, num_classes=table.num_classes)
    ckpt = root / "run" / "model_final.safetensors"
    save_detector(model, ckpt, table)
    val = copy.deepcopy(train)
    val["categories"] = [{"id": 1, "name": "truck"}] + [
        c for c in val["categories"] if c["id"] not in (7, 20)
    ]
    val["annotations"] = [a for a in val["annotations"] if a["category_id"] not in (7, 20)]
    (root / "val.json").write_text(json.dumps(val))
    cfg.data.val_ann = str(root / "val.json")
    with caplog.at_level(logging.WARNING):
        result = evaluate_checkpoint(EvaluateJob.from_config(cfg, ckpt, root / "ev", ("bbox",)))
    assert result["bbox"]["num_images"] == len(SIZES)
    assert "2 only in the model (detections dropped): 7 'tram', 20 'bike'" in caplog.text
    dets = json.loads((root / "ev" / "detections_bbox.json").read_text())
    assert dets and {d["category_id"] for d in dets} <= {3, 11}


def test_checkpoint_without_record_falls_back_to_train_ann_with_a_warning(case, caplog):
    cfg, train, table, root = case
    model = detector_for(cfg, num_classes=table.num_classes)
    ckpt = root / "plain" / "model.safetensors"
    save_detector(model, ckpt)  # no record, no categories.json next to it
    cfg.data.val_ann = cfg.data.train_ann
    with caplog.at_level(logging.WARNING):
        evaluate_checkpoint(EvaluateJob.from_config(cfg, ckpt, root / "ev2", ("bbox",)))
    assert "no category record" in caplog.text and "data.train_ann=" in caplog.text
