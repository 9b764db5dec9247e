"""Frequency groups (LVIS rule) and COCO-LT bins at their boundaries."""

import pytest

from drcl.data.coco import CocoIndex
from drcl.data.groups import class_counts, cocolt_bin, lvis_frequency
from drcl.evaluation.groups import class_info

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
    assert cocolt_bin(instances) == b


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
    # both sources present and disagreeing on both classes: say which one is used, and how many
    assert info.notes == [
        "frequency groups from the gt's 'frequency' field; the LVIS rule on --train-ann's "
        "image counts gives another group for 2 of 2 classes"
    ]
    for c in cats:
        del c["frequency"]
    # neither frequency nor training counts: the evaluation file's own image_count must not
    # make groups (it describes the evaluation set)
    info = class_info(cats)
    assert info.groups == [None, None] and info.groups_source is None
    assert info.bins == [None, None] and info.bins_source is None
    assert info.notes == [
        "APr/APc/APf and AP1..AP4 unavailable: no frequency groups; pass --train-ann TRAIN.json "
        "(or use a gt with categories[].frequency)"
    ]
    with pytest.raises(ValueError, match="category 1: field 'frequency': unknown value 'x'"):
        class_info([{"id": 1, "frequency": "x"}])


def test_counts_from_the_evaluation_file_are_labelled(caplog):
    cats = [
        {"id": 1, "name": "awning", "frequency": "f", "image_count": 1, "instance_count": 1},
        {"id": 2, "name": "b", "frequency": "r", "image_count": 3, "instance_count": 30},
    ]
    info = class_info(cats)
    assert info.groups == ["f", "r"] and info.bins == [1, 2]
    assert info.bins_source == "instance_count"
    assert info.notes == [
        "per-class counts and COCO-LT bins: counts from the evaluation file, not training; "
        "pass --train-ann TRAIN.json (or use a gt with categories[].frequency)"
    ]
    assert caplog.text.count("counts from the evaluation file") == 1  # warned once


def test_agreeing_sources_give_no_note():
    cats = [{"id": 1, "name": "a", "frequency": "r"}, {"id": 2, "name": "b", "frequency": "c"}]
    info = class_info(cats, train_json({1: (3, 3), 2: (50, 60)}))
    assert info.notes == [] and info.groups == ["r", "c"]


def test_a_partial_frequency_field_keeps_its_values_and_computes_the_rest():
    # the one rule of drcl.data.groups.groups_for: the field where present, else training images
    cats = [{"id": 1, "name": "a", "frequency": "r"}, {"id": 2, "name": "b"}]
    info = class_info(cats, train_json({1: (200, 200), 2: (50, 50)}))
    assert info.groups == ["r", "c"] and info.groups_source == "train_ann"
