"""Attention maps explain a category through the checkpoint's own labels (its category record),
not through the position in the annotation file's list (issue 26)."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import save_file

from drcl.analysis.runner import attention_labels
from drcl.data.categories import CATEGORIES_FILE, CategoryTable


def _ann(path, cats):
    data = {
        "images": [],
        "annotations": [],
        "categories": [{"id": c, "name": f"c{c}"} for c in cats],
    }
    path.write_text(json.dumps(data))
    return str(path)


def test_labels_come_from_the_record(tmp_path):
    train = _ann(tmp_path / "train.json", [3, 7, 11])
    val = _ann(tmp_path / "val.json", [1, 3, 7, 11])  # an extra id sorting first
    run = tmp_path / "run"
    run.mkdir()
    save_file({"w": torch.zeros(1)}, run / "model_final.safetensors")
    CategoryTable.from_coco(train).save(run / CATEGORIES_FILE)
    assert attention_labels(str(run), val, [7, 11]) == ([2, 3], 3)  # not [3, 4] of val.json
    with pytest.raises(ValueError, match="category id 1 is not one of the model's training"):
        attention_labels(str(run), val, [1])
    plain = tmp_path / "plain.safetensors"
    save_file({"w": torch.zeros(1)}, plain)
    assert attention_labels(str(plain), val, [7]) == ([3], 4)  # no record: val.json, by id order
