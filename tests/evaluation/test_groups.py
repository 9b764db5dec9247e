"""Frequency groups (LVIS rule) and COCO-LT bins at their boundaries."""

import pytest

from drcl.data.coco import CocoIndex
from drcl.data.groups import class_counts, lvis_frequency
from drcl.evaluation.groups import class_info, coco_lt_bin

from .cases import train_json


@pytest.mark.parametrize(
    "images,group", [(0, "r"), (1, "r"), (10, "r"), (11, "c"), (100, "c"), (101, "f")]
)
def test_frequency_group_boundaries(images, group):
    assert lvis_frequency(images) == group


@pytest.mark.parametrize(
    "instances,b",
    [(0, None), (1, 1), (19, 1), (20, 2), (399, 2), (400, 3), (7999, 3), (8000, 4), (10**6, 4)],
)
def test_coco_lt_bin_boundaries(instances, b):
    assert coco_lt_bin(instances) == b


def test_class_counts_count_images_once_and_every_instance():
    train = train_json({1: (3, 7), 2: (2, 2)})
    train["categories"].append({"id": 3, "name": "never"})
    images, instances = class_counts(train)
    assert images == {1: 3, 2: 2, 3: 0}
    assert instances == {1: 7, 2: 2, 3: 0}
    index = CocoIndex(train)  # the data index gives the same numbers on a full json
    assert index.counts_by_cat_id(index.image_counts()) == images
    assert index.counts_by_cat_id(index.instance_counts()) == instances


def test_class_info_sources_and_priority():
    cats = [
        {"id": 2, "name": "b", "frequency": "f", "image_count": 1},
        {"id": 1, "name": "a", "frequency": "r", "image_count": 500},
    ]
    info = class_info(cats, train_json({1: (200, 200), 2: (1, 1)}))
    # the json's own frequency field wins; instance counts come from the training json
    assert info.cat_ids == [1, 2] and info.groups == ["r", "f"]
    assert info.groups_source == "frequency" and info.bins == [2, 1]
    for c in cats:
        del c["frequency"]
    info = class_info(cats)
    assert info.groups == ["f", "r"] and info.groups_source == "image_count"
    assert info.bins == [None, None] and info.bins_source is None
    with pytest.raises(ValueError, match="field 'frequency': unknown values \\['x'\\]"):
        class_info([{"id": 1, "frequency": "x"}])
