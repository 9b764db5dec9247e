import dataclasses
import json

import numpy as np
import pytest
import torch

from drcl.cli.main import main
from drcl.config import load_config
from drcl.data.coco import CocoIndex
from drcl.engine.distributed import DistInfo
from drcl.pretrain.loop import build_pretrain_data
from drcl.proposals.core import gt_proposals, label_by_overlap, load_proposals

GT = {
    "images": [
        {"id": 1, "file_name": "a.png", "width": 50, "height": 40},
        {"id": 2, "file_name": "b.png", "width": 50, "height": 40},
    ],
    "annotations": [
        {"id": 1, "image_id": 1, "category_id": 7, "bbox": [0, 0, 10, 10]},
        {"id": 2, "image_id": 1, "category_id": 9, "bbox": [20, 20, 10, 5], "iscrowd": 1},
        {"id": 3, "image_id": 2, "category_id": 9, "bbox": [1, 2, 3, 4]},
    ],
    "categories": [{"id": 7, "name": "a"}, {"id": 9, "name": "b"}],
}
LABELS = {7: 1, 9: 2}


def test_gt_proposals_keep_classes_and_drop_crowd(tmp_path):
    recs = gt_proposals(GT)
    assert [(r["image_id"], r["category_id"]) for r in recs] == [(1, 7), (2, 9)]
    path = tmp_path / "p.json"
    path.write_text(
        json.dumps(
            recs + [{"image_id": 2, "bbox": [5, 5, 2, 2], "score": 0.5, "category_id": None}]
        )
    )
    props = load_proposals(path, GT, LABELS)
    boxes, labels = props[2]
    np.testing.assert_allclose(boxes, [[1, 2, 4, 6], [5, 5, 7, 7]])  # xywh -> xyxy
    assert labels.tolist() == [2, 0]  # contiguous label, 0 = no class


@pytest.mark.parametrize(
    "record, message",
    [
        ({"bbox": [0, 0, 1, 1]}, "record 0: missing field 'image_id'"),
        ({"image_id": 5, "bbox": [0, 0, 1, 1]}, "record 0: field 'image_id': unknown image 5"),
        ({"image_id": 1, "bbox": [0, 0, 1]}, "record 0: field 'bbox': expected"),
        ({"image_id": 1, "bbox": [0, 0, float("nan"), 1]}, "non-finite or non-positive"),
        ({"image_id": 1, "bbox": [0, 0, 0, 1]}, "non-finite or non-positive"),
        ({"image_id": 1, "bbox": [0, 0, 1, 1], "category_id": 3}, "unknown category 3"),
    ],
)
def test_bad_proposal_records_are_named(tmp_path, record, message):
    path = tmp_path / "bad.json"
    path.write_text(json.dumps([record]))
    with pytest.raises(ValueError, match=message):
        load_proposals(path, GT, LABELS)


def test_not_a_list_is_rejected(tmp_path):
    path = tmp_path / "bad.json"
    path.write_text("{}")
    with pytest.raises(ValueError, match="expected a json list"):
        load_proposals(path, GT, LABELS)


def test_label_by_overlap_hand_case():
    gt = torch.tensor([[0.0, 0, 10, 10], [20, 20, 40, 40]])
    cats = torch.tensor([7, 9])
    props = torch.tensor([[0.0, 0, 10, 10], [0, 0, 10, 20], [0, 0, 10, 21], [50, 50, 60, 60]])
    # IoUs with gt 0: 1, 0.5 (kept, >= 0.5), 100/210 (< 0.5), 0
    assert label_by_overlap(props, gt, cats).tolist() == [7, 7, -1, -1]
    assert label_by_overlap(props[:0], gt, cats).shape == (0,)
    assert label_by_overlap(props, gt[:0], cats[:0]).tolist() == [-1] * 4


def test_images_without_proposals_still_feed_hcl_ar_sr(tiny_overrides, tiny_demo, tmp_path):
    index = CocoIndex.from_file(tiny_demo["train_ann"])
    keep = set(index.image_ids[: len(index.image_ids) // 2])
    recs = [r for r in gt_proposals(index.data) if r["image_id"] in keep]
    path = tmp_path / "half.json"
    path.write_text(json.dumps(recs))
    cfg = load_config(
        None, [*tiny_overrides, "pretrain.proposals.source=file", f"pretrain.proposals.file={path}"]
    )
    data = build_pretrain_data(cfg.data, cfg.train, cfg.pretrain, tmp_path, DistInfo())
    batches = [b for _, b in zip(range(6), data.batches(), strict=False)]  # the first 6
    per_image = torch.cat([b.box_valid.any(1) for b in batches])
    assert (~per_image).any() and per_image.any()  # some images with no box at all
    from drcl.pretrain.runner import build_drcl_model

    model = build_drcl_model(cfg)
    empty = dataclasses.replace(batches[0], box_valid=torch.zeros_like(batches[0].box_valid))
    losses = model(empty)
    assert all(torch.isfinite(v) for v in losses.values())
    assert losses["loss_lcl"] == 0 and losses["loss_hcl"] > 0


def test_cli_gt_and_detector_sources(tiny_overrides, tmp_path, capsys):
    out = tmp_path / "gt.json"
    assert (
        main(["proposals", "configs/pretrain/demo.yaml", "--out", str(out), *tiny_overrides]) == 0
    )
    assert "from 'gt'" in capsys.readouterr().out
    det = tmp_path / "det.json"
    over = [
        *tiny_overrides,
        "pretrain.proposals.source=detector",
        "pretrain.proposals.detector_iters=2",
        "pretrain.proposals.score_thresh=0.0",
        "pretrain.proposals.top_n=5",
        "model.norm=frozen_bn",
    ]
    assert main(["proposals", "configs/pretrain/demo.yaml", "--out", str(det), *over]) == 0
    recs = json.loads(det.read_text())
    gt = json.loads(open(load_config(None, tiny_overrides).data.train_ann).read())
    ids = {im["id"] for im in gt["images"]}
    cats = {c["id"] for c in gt["categories"]}
    assert recs and all(r["image_id"] in ids for r in recs)
    assert all(r["category_id"] is None or r["category_id"] in cats for r in recs)
    per_image = {}
    for r in recs:
        per_image[r["image_id"]] = per_image.get(r["image_id"], 0) + 1
    assert max(per_image.values()) <= 5
    assert (tmp_path / "det.detector" / "model_final.safetensors").is_file()


def test_detector_folder_is_named_and_deleted_with_clean_detector(tiny_overrides, tmp_path, capsys):
    """`drcl proposals` says what OUT.detector/ holds; --clean-detector deletes it (issue 26)."""
    over = [
        *tiny_overrides,
        "pretrain.proposals.source=detector",
        "pretrain.proposals.detector_iters=1",
        "pretrain.proposals.top_n=3",
        "model.norm=frozen_bn",
    ]
    det = tmp_path / "det.json"
    argv = ["proposals", "configs/pretrain/demo.yaml", "--out", str(det), *over]
    assert main([*argv, "--clean-detector"]) == 0
    out = capsys.readouterr().out
    assert "deleted the proposal detector's run folder" in out and "det.detector" in out
    assert det.is_file() and not (tmp_path / "det.detector").exists()
    keep = tmp_path / "keep.json"
    assert main(["proposals", "configs/pretrain/demo.yaml", "--out", str(keep), *over]) == 0
    assert "kept the proposal detector's run folder" in capsys.readouterr().out
    assert (tmp_path / "keep.detector").is_dir()


def test_proposals_file_ignored_with_source_gt_is_warned_about(tiny_overrides, tmp_path, capsys):
    out = tmp_path / "gt.json"
    over = [*tiny_overrides, f"pretrain.proposals.file={tmp_path / 'mine.json'}"]
    assert main(["proposals", "configs/pretrain/demo.yaml", "--out", str(out), *over]) == 0
    err = capsys.readouterr().err
    assert "mine.json is not read: pretrain.proposals.source=gt" in err
    from drcl.pretrain.loop import resolve_proposals

    cfg = load_config("configs/pretrain/demo.yaml", over)
    resolve_proposals(cfg.pretrain.proposals, CocoIndex.from_file(cfg.data.train_ann), tmp_path)
    assert "is not read: pretrain.proposals.source=gt uses the training boxes" in (
        capsys.readouterr().err
    )


def test_class_agnostic_json_merges_every_class_and_drops_lvis_id_lists():
    from drcl.proposals.detector import class_agnostic_json

    data = {
        "images": [{"id": 1, "neg_category_ids": [3], "not_exhaustive_category_ids": [], "w": 1}],
        "categories": [{"id": 3, "name": "a"}, {"id": 5, "name": "b"}],
        "annotations": [
            {"id": 1, "image_id": 1, "category_id": 3, "bbox": [0, 0, 2, 2]},
            {"id": 2, "image_id": 1, "category_id": 5, "bbox": [1, 1, 2, 2]},
        ],
    }
    out = class_agnostic_json(CocoIndex(data))
    assert out["categories"] == [{"id": 1, "name": "object", "frequency": "f"}]
    assert [a["category_id"] for a in out["annotations"]] == [1, 1]
    assert [a["bbox"] for a in out["annotations"]] == [[0, 0, 2, 2], [1, 1, 2, 2]]
    assert out["images"] == [{"id": 1, "w": 1}]
    assert data["annotations"][1]["category_id"] == 5  # the input is left alone
