"""run_inference / merge_detections write valid COCO results; evaluate_checkpoint end to end."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from drcl.data.categories import CategoryTable
from drcl.data.dataset import DetectionDataset
from drcl.detection.inference import merge_detections, rank_file, run_inference
from drcl.finetune.job import EvaluateJob
from drcl.finetune.runner import detector_for, evaluate_checkpoint

try:
    from pycocotools import mask as mask_utils
except ImportError:  # pragma: no cover
    from faster_coco_eval.core import mask as mask_utils

CAT_IDS = [3, 7, 11]  # non-contiguous on purpose: labels 1, 2, 3
SIZES = {101: (48, 64), 205: (64, 64), 307: (64, 40)}  # image id -> (h, w)


def _write_dataset(root):
    rng = np.random.default_rng(0)
    images, anns = [], []
    (root / "images").mkdir()
    for k, (iid, (h, w)) in enumerate(SIZES.items()):
        name = f"img_{iid}.png"
        Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8)).save(
            root / "images" / name
        )
        images.append({"id": iid, "file_name": name, "height": h, "width": w})
        box = [4.0, 6.0, 20.0, 18.0]
        poly = [[4, 6, 24, 6, 24, 24, 4, 24]]
        anns.append(
            {
                "id": k + 1,
                "image_id": iid,
                "category_id": CAT_IDS[k],
                "bbox": box,
                "area": 360.0,
                "iscrowd": 0,
                "segmentation": poly,
            }
        )
    cats = [{"id": c, "name": f"c{c}", "frequency": "f"} for c in CAT_IDS]
    data = {"images": images, "annotations": anns, "categories": cats}
    (root / "ann.json").write_text(json.dumps(data))
    return root / "ann.json", root / "images"


@pytest.fixture
def dataset(tmp_path):
    ann, images = _write_dataset(tmp_path)
    return DetectionDataset(ann, images)


def _model(cfg):
    torch.manual_seed(0)
    return detector_for(cfg, num_classes=len(CAT_IDS)).eval()


def _check_records(records, iou_type="bbox"):
    assert isinstance(records, list) and records
    for r in records:
        assert r["image_id"] in SIZES and r["category_id"] in CAT_IDS
        h, w = SIZES[r["image_id"]]
        x, y, bw, bh = r["bbox"]
        assert bw >= 0 and bh >= 0 and x >= 0 and y >= 0
        assert x + bw <= w + 1e-3 and y + bh <= h + 1e-3  # original image pixels
        assert 1e-4 < r["score"] <= 1
        if iou_type == "segm":
            rle = r["segmentation"]
            assert list(rle["size"]) == [h, w] and isinstance(rle["counts"], str)
            rle = {"size": rle["size"], "counts": rle["counts"].encode()}
            assert mask_utils.decode(rle).shape == (h, w)
    per_image = {}
    for r in records:
        per_image.setdefault(r["image_id"], []).append(r["score"])
    assert all(len(s) <= 300 for s in per_image.values())


def test_sharded_inference_and_merge_equal_one_process(tiny_config, dataset, tmp_path):
    model = _model(tiny_config())
    cats = CategoryTable.from_coco(dataset.index)
    single = run_inference(model, dataset, 1, "cpu", tmp_path / "single.json", categories=cats)
    paths = [
        run_inference(
            model, dataset, 1, "cpu", rank_file(tmp_path / "d.json", r, 2), r, 2, categories=cats
        )
        for r in range(2)
    ]
    assert [p.name for p in paths] == ["d.rank0.json", "d.rank1.json"]
    # rank 0 takes images 0 and 2, rank 1 image 1
    assert {r["image_id"] for r in json.loads(paths[0].read_text())} == {101, 307}
    assert {r["image_id"] for r in json.loads(paths[1].read_text())} == {205}
    count = merge_detections(paths, tmp_path / "merged.json")
    merged = json.loads((tmp_path / "merged.json").read_text())
    assert count == len(merged)
    _check_records(merged)
    expected = sorted(json.loads(single.read_text()), key=lambda r: (r["image_id"], -r["score"]))
    assert [(r["image_id"], r["category_id"]) for r in merged] == [
        (r["image_id"], r["category_id"]) for r in expected
    ]
    assert np.allclose([r["bbox"] for r in merged], [r["bbox"] for r in expected], atol=1e-3)


def test_merge_keeps_one_copy_of_a_duplicated_image(tmp_path):
    a = [{"image_id": 1, "category_id": 3, "bbox": [0, 0, 1, 1], "score": 0.2}]
    b = [
        {"image_id": 1, "category_id": 3, "bbox": [0, 0, 1, 1], "score": 0.2},
        {"image_id": 2, "category_id": 7, "bbox": [0, 0, 2, 2], "score": 0.9},
    ]
    (tmp_path / "a.json").write_text(json.dumps(a))
    (tmp_path / "b.json").write_text(json.dumps(b))
    assert merge_detections([tmp_path / "a.json", tmp_path / "b.json"], tmp_path / "m.json") == 2
    (tmp_path / "bad.json").write_text(json.dumps({"oops": 1}))
    with pytest.raises(ValueError, match="bad.json: expected a list"):
        merge_detections([tmp_path / "bad.json"], tmp_path / "m.json")


def test_mask_rcnn_writes_rle(tiny_config, dataset, tmp_path):
    model = _model(tiny_config("mask_rcnn"))
    cats = CategoryTable.from_coco(dataset.index)
    out = run_inference(model, dataset, 2, "cpu", tmp_path / "segm.json", categories=cats)
    _check_records(json.loads(out.read_text()), "segm")


def test_evaluate_checkpoint_end_to_end(tiny_config, dataset, tmp_path):
    cfg = tiny_config("faster_rcnn", "ecm")  # a loss needing frequencies for training only
    cfg.data.val_ann = cfg.data.train_ann = str(dataset.index.path)
    cfg.data.val_images = str(dataset.image_dir)
    model = detector_for(cfg, num_classes=3, class_freqs=torch.tensor([1.0, 2.0, 3.0]))
    ckpt = tmp_path / "ckpt_0000010.pt"
    torch.save({"model": model.state_dict(), "iteration": 10}, ckpt)
    result = evaluate_checkpoint(EvaluateJob.from_config(cfg, ckpt, tmp_path / "eval", ("bbox",)))
    assert set(result) == {"bbox"}
    metrics = result["bbox"]
    assert metrics["num_images"] == 3 and 0.0 <= metrics["AP"] <= 1.0
    _check_records(json.loads((tmp_path / "eval" / "detections_bbox.json").read_text()))
    assert json.loads((tmp_path / "eval" / "metrics_bbox.json").read_text())["num_images"] == 3


def test_evaluate_checkpoint_rejects_a_mismatched_checkpoint(tiny_config, dataset, tmp_path):
    cfg = tiny_config()
    cfg.data.val_ann, cfg.data.val_images = str(dataset.index.path), str(dataset.image_dir)
    cfg.data.train_ann = cfg.data.val_ann
    ckpt = tmp_path / "other.pt"
    torch.save({"model": detector_for(cfg, num_classes=5).state_dict()}, ckpt)
    with pytest.raises(ValueError, match="other.pt: .*box_predictor"):
        evaluate_checkpoint(EvaluateJob.from_config(cfg, ckpt, tmp_path / "eval"))
    with pytest.raises(ValueError, match="needs finetune.arch=mask_rcnn"):
        EvaluateJob.from_config(cfg, ckpt, tmp_path / "eval", ("segm",))
