"""The category record of a model: built from a training json, saved, read back from a
checkpoint, the one label -> id mapping and the match by id with another file."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from drcl.data.categories import (
    CATEGORIES_FILE,
    METADATA_KEY,
    CategoryMismatchError,
    CategoryTable,
    categories_for_checkpoint,
    labels_to_category_ids,
    match_categories,
)


def _train_json():
    # ids non-contiguous and listed out of order; one class without annotations; no frequency
    cats = [
        {"id": 12, "name": "bus"},
        {"id": 3, "name": "car"},
        {"id": 7, "name": "tram", "frequency": "f"},
    ]
    images = [{"id": i, "file_name": f"{i}.png", "height": 8, "width": 8} for i in (1, 2, 3)]
    anns = [
        {"id": 1, "image_id": 1, "category_id": 3, "bbox": [0, 0, 2, 2]},
        {"id": 2, "image_id": 1, "category_id": 3, "bbox": [2, 2, 2, 2]},
        {"id": 3, "image_id": 2, "category_id": 3, "bbox": [0, 0, 2, 2], "iscrowd": 1},
        {"id": 4, "image_id": 3, "category_id": 12, "bbox": [0, 0, 2, 2]},
    ]
    return {"images": images, "annotations": anns, "categories": cats}


def test_from_coco_records_ids_names_labels_counts_and_frequency():
    table = CategoryTable.from_coco(_train_json())
    assert table.cat_ids == [3, 7, 12]
    assert [r.label for r in table.records] == [1, 2, 3]
    assert [r.name for r in table.records] == ["car", "tram", "bus"]
    assert [r.image_count for r in table.records] == [2, 0, 1]
    assert [r.instance_count for r in table.records] == [3, 0, 1]
    # json 'frequency' wins; else the LVIS rule (<= 10 images: rare)
    assert table.frequencies() == ["r", "f", "r"]
    # scaled thresholds (data.groups): 2 images is 'frequent' when common_max = 1
    assert CategoryTable.from_coco(_train_json(), 0, 1).frequencies() == ["f", "f", "c"]


def test_json_round_trip_and_file(tmp_path):
    table = CategoryTable.from_coco(_train_json())
    assert CategoryTable.from_json(json.loads(json.dumps(table.to_json()))) == table
    path = table.save(tmp_path / CATEGORIES_FILE)
    assert CategoryTable.load(path) == table
    assert not list(tmp_path.glob(".*tmp"))  # atomic writer left nothing behind


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda d: d["categories"][0].pop("label"), "category 0: missing or bad field 'label'"),
        (lambda d: d["categories"][1].update(label=1), "labels must be 1..C"),
        (lambda d: d["categories"][1].update(id=3), "duplicate category ids"),
        (lambda d: d["categories"][0].update(frequency="x"), "frequency must be r, c, f"),
        (lambda d: d["categories"][0].update(id="3"), "category 0: missing or bad field"),
        (lambda d: d.pop("categories"), "expected an object with a 'categories' list"),
    ],
)
def test_from_json_refuses_bad_records(mutate, message):
    obj = CategoryTable.from_coco(_train_json()).to_json()
    mutate(obj)
    with pytest.raises(ValueError, match=message):
        CategoryTable.from_json(obj, "run/categories.json")


def test_labels_to_category_ids_by_hand():
    table = CategoryTable.from_coco(_train_json())
    ids = labels_to_category_ids(torch.tensor([3, 1, 1, 2]), table)
    assert ids.tolist() == [12, 3, 3, 7] and ids.dtype == np.int64
    assert labels_to_category_ids([], table).tolist() == []
    with pytest.raises(ValueError, match="model label 4 outside 1..3"):
        labels_to_category_ids(np.array([1, 4]), table)
    with pytest.raises(ValueError, match="model label 0 outside"):
        labels_to_category_ids([0], table)


def _cats(*pairs):
    return [{"id": i, "name": n} for i, n in pairs]


def test_match_identical_reordered_is_exact():
    table = CategoryTable.from_coco(_train_json())
    m = match_categories(table, _cats((12, "bus"), (7, "tram"), (3, "car")), "val.json")
    assert m.exact and m.shared == (3, 7, 12)
    assert m.label_to_cat_id(table) == {1: 3, 2: 7, 3: 12}


def test_match_lists_ids_on_one_side_in_one_line():
    table = CategoryTable.from_coco(_train_json())
    # val: 'tram' missing, an extra 'truck' 1 that sorts first (positions would shift by one)
    m = match_categories(table, _cats((1, "truck"), (3, "car"), (12, "bus")), "data/val.json")
    assert (m.shared, m.model_only, m.file_only) == ((3, 12), (7,), (1,))
    assert m.label_to_cat_id(table) == {1: 3, 2: None, 3: 12}
    line = m.line(table)
    assert "\n" not in line
    assert "2 shared" in line and "1 only in the model (detections dropped): 7 'tram'" in line
    assert "1 only in val.json (never predicted): 1" in line


def test_match_refuses_renamed_ids_unless_allowed():
    table = CategoryTable.from_coco(_train_json())
    val = _cats((3, "car"), (7, "tractor"), (12, "bus"))
    with pytest.raises(CategoryMismatchError, match=r"id 7: 'tram' in the model, 'tractor'"):
        match_categories(table, val, "val.json")
    with pytest.raises(CategoryMismatchError, match="--allow-category-mismatch"):
        match_categories(table, val, "val.json")
    m = match_categories(table, val, "val.json", allow_mismatch=True)
    assert m.renamed == ((7, "tram", "tractor"),) and "another name" in m.line(table)


def test_match_refuses_no_common_id():
    table = CategoryTable.from_coco(_train_json())
    with pytest.raises(CategoryMismatchError, match="val.json: no category id in common"):
        match_categories(table, _cats((103, "car"), (107, "tram")), "val.json")


def test_record_found_in_safetensors_metadata_then_run_folder(tmp_path):
    table = CategoryTable.from_coco(_train_json())
    state = {"w": torch.zeros(2)}
    with_meta = tmp_path / "a" / "model_final.safetensors"
    with_meta.parent.mkdir()
    save_file(state, with_meta, metadata={METADATA_KEY: json.dumps(table.to_json())})
    assert categories_for_checkpoint(with_meta) == table

    run = tmp_path / "run"
    run.mkdir()
    save_file(state, run / "plain.safetensors")
    torch.save({"model": state}, run / "ckpt_0000002.pt")
    assert categories_for_checkpoint(run / "plain.safetensors") is None
    table.save(run / CATEGORIES_FILE)
    assert categories_for_checkpoint(run / "plain.safetensors") == table
    assert categories_for_checkpoint(run / "ckpt_0000002.pt") == table

    bad = tmp_path / "bad.safetensors"
    save_file(state, bad, metadata={METADATA_KEY: "{not json"})
    with pytest.raises(ValueError, match=f"bad.safetensors: metadata '{METADATA_KEY}'"):
        categories_for_checkpoint(bad)
