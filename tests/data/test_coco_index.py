"""CocoIndex: ids, labels, counts, frequency groups, COCO-LT bins, per-image label CSR."""

from __future__ import annotations

import json

import numpy as np
import pytest

from drcl.data.coco import CocoIndex, contiguous_ids
from drcl.data.groups import bins_for, cocolt_bin, groups_for, lvis_frequency


def _random_data(seed: int, n_images: int = 120, n_cats: int = 17, n_anns: int = 700) -> dict:
    rng = np.random.default_rng(seed)
    cat_ids = rng.choice(1000, n_cats, replace=False).tolist()
    image_ids = rng.choice(10**6, n_images, replace=False).tolist()
    # a Zipf-like class distribution so some classes are absent
    p = 1.0 / np.arange(1, n_cats + 1) ** 1.5
    anns = [
        {
            "id": k + 1,
            "image_id": int(rng.choice(image_ids)),
            "category_id": int(cat_ids[rng.choice(n_cats, p=p / p.sum())]),
            "bbox": [0, 0, 1, 1],
            "iscrowd": int(rng.random() < 0.1),
        }
        for k in range(n_anns)
    ]
    images = [{"id": i, "file_name": f"{i}.png", "width": 8, "height": 8} for i in image_ids]
    cats = [{"id": c, "name": str(c)} for c in cat_ids]
    return {"images": images, "annotations": anns, "categories": cats}


def test_contiguous_ids_and_labels(tiny_data):
    assert contiguous_ids(tiny_data["categories"]) == [2, 5]
    index = CocoIndex(tiny_data)
    assert index.cat_id_to_label == {2: 1, 5: 2}
    assert index.label_to_cat_id == {1: 2, 2: 5}
    assert index.num_classes == 2
    assert index.image_ids == [1, 2, 3]  # json order
    assert [a["id"] for a in index.anns_by_image[1]] == [10, 11]
    assert index.anns_by_image[3] == []


@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.parametrize("include_crowd", [True, False])
def test_counts_match_direct_loops(seed, include_crowd):
    data = _random_data(seed)
    index = CocoIndex(data)
    cat_ids = sorted(c["id"] for c in data["categories"])
    inst = dict.fromkeys(cat_ids, 0)
    imgs: dict[int, set] = {c: set() for c in cat_ids}
    for a in data["annotations"]:
        if include_crowd or not a["iscrowd"]:
            inst[a["category_id"]] += 1
            imgs[a["category_id"]].add(a["image_id"])
    assert index.instance_counts(include_crowd).tolist() == [inst[c] for c in cat_ids]
    assert index.image_counts(include_crowd).tolist() == [len(imgs[c]) for c in cat_ids]
    assert index.instance_counts().dtype == np.int64


def test_image_labels_csr_matches_loop():
    data = _random_data(3)
    index = CocoIndex(data)
    csr = index.image_labels()
    label = {c: i + 1 for i, c in enumerate(sorted(c["id"] for c in data["categories"]))}
    assert csr.image_ids.tolist() == [img["id"] for img in data["images"]]
    assert csr.offsets[0] == 0 and csr.offsets[-1] == len(data["annotations"])
    lists = csr.as_lists()
    for i, img in enumerate(data["images"]):
        expected = [
            label[a["category_id"]] for a in data["annotations"] if a["image_id"] == img["id"]
        ]
        assert csr.of(i).tolist() == expected
        assert lists[i].tolist() == expected
        assert csr.as_lists(unique=True)[i].tolist() == sorted(set(expected))


def test_empty_annotations():
    data = {"images": [{"id": 7}], "annotations": [], "categories": [{"id": 3, "name": "x"}]}
    index = CocoIndex(data)
    assert index.instance_counts().tolist() == [0]
    assert index.image_counts().tolist() == [0]
    csr = index.image_labels()
    assert csr.offsets.tolist() == [0, 0] and csr.labels.tolist() == []
    assert csr.of(0).tolist() == []
    assert index.frequency_groups() == {3: "r"}
    assert index.cocolt_bins() == {3: None}  # no training instance: in no COCO-LT bin


@pytest.mark.parametrize(
    ("images", "group"), [(0, "r"), (1, "r"), (10, "r"), (11, "c"), (100, "c"), (101, "f")]
)
def test_lvis_rule_edges(images, group):
    assert lvis_frequency(images) == group


@pytest.mark.parametrize(
    ("n", "b"), [(0, None), (1, 1), (19, 1), (20, 2), (399, 2), (400, 3), (7999, 3), (8000, 4)]
)
def test_cocolt_bin_edges(n, b):
    assert cocolt_bin(n) == b
    assert bins_for({9: n}) == {9: b}


def test_frequency_groups_computed_from_image_counts():
    # class c has annotations in exactly c images (twice in each, so instances = 2c)
    sizes = {1: 10, 2: 11, 3: 100, 4: 101}
    images = [{"id": i} for i in range(101)]
    anns = [
        {"id": 1000 * c + i * 2 + k, "image_id": i, "category_id": c, "bbox": [0, 0, 1, 1]}
        for c, n in sizes.items()
        for i in range(n)
        for k in range(2)
    ]
    cats = [{"id": c, "name": str(c)} for c in sizes]
    index = CocoIndex({"images": images, "annotations": anns, "categories": cats})
    assert index.frequency_groups() == {1: "r", 2: "c", 3: "c", 4: "f"}
    assert index.image_counts().tolist() == [10, 11, 100, 101]
    # instances 20, 22, 200, 202 -> bins 2, 2, 2, 2; the rule uses images, not instances
    assert index.cocolt_bins() == {1: 2, 2: 2, 3: 2, 4: 2}


def test_frequency_field_wins_and_fallback():
    cats = [{"id": 1, "frequency": "f"}, {"id": 2}, {"id": 3, "frequency": None}]
    # the field wins; absent or null: LVIS rule on the training image counts (missing id: 0)
    assert groups_for(cats, {1: 1, 2: 50, 3: 500}) == {1: "f", 2: "c", 3: "f"}
    assert groups_for(cats, {1: 1, 2: 50}, use_json=False) == {1: "r", 2: "c", 3: "r"}
    with pytest.raises(ValueError, match="category 2: no 'frequency'"):
        groups_for(cats)


def test_an_unknown_frequency_is_an_error_wherever_groups_are_made():
    cats = [{"id": 1, "frequency": "f"}, {"id": 3, "frequency": "bogus"}]
    with pytest.raises(ValueError, match="category 3: field 'frequency': unknown value 'bogus'"):
        groups_for(cats, {1: 1, 3: 500})
    with pytest.raises(ValueError, match="category 3: field 'frequency': unknown value 'bogus'"):
        groups_for(cats, {1: 1, 3: 500}, use_json=False)  # checked even when not used


def test_lvis_fields_kept(tiny_data):
    tiny_data["images"][0]["neg_category_ids"] = [2]
    tiny_data["images"][0]["not_exhaustive_category_ids"] = [5]
    tiny_data["categories"][0].update(frequency="r", image_count=2, instance_count=3)
    index = CocoIndex(tiny_data)
    assert index.images[1]["neg_category_ids"] == [2]
    assert index.frequency_groups()[5] == "r"
    # category 2 has no json frequency: LVIS rule on its 1 training image
    assert index.frequency_groups()[2] == "r"


def test_bad_inputs_name_file_and_record(tmp_path, tiny_data):
    path = tmp_path / "x.json"
    tiny_data["annotations"][1]["image_id"] = 99
    path.write_text(json.dumps(tiny_data))
    with pytest.raises(ValueError, match=r"x\.json: annotation 11: unknown image_id 99"):
        CocoIndex.from_file(path)
    tiny_data["annotations"][1].update(image_id=1, category_id=42)
    path.write_text(json.dumps(tiny_data))
    with pytest.raises(ValueError, match=r"x\.json: annotation 11: unknown category_id 42"):
        CocoIndex.from_file(path)
    del tiny_data["annotations"][1]["category_id"]
    path.write_text(json.dumps(tiny_data))
    with pytest.raises(ValueError, match=r"x\.json: malformed record .*category_id.*data check"):
        CocoIndex.from_file(path)
    path.write_text('{"images": [}')
    with pytest.raises(ValueError, match=r"x\.json: invalid JSON at line 1"):
        CocoIndex.from_file(path)
    path.write_text("[]")
    with pytest.raises(ValueError, match="expected an object"):
        CocoIndex.from_file(path)
    path.write_text('{"images": [], "annotations": []}')
    with pytest.raises(ValueError, match="'categories' missing"):
        CocoIndex.from_file(path)


def test_duplicate_ids_rejected(tiny_data):
    tiny_data["images"].append(dict(tiny_data["images"][0]))
    with pytest.raises(ValueError, match="duplicate image ids"):
        CocoIndex(tiny_data)
    tiny_data["images"].pop()
    tiny_data["categories"].append({"id": 5, "name": "again"})
    with pytest.raises(ValueError, match="duplicate category ids"):
        CocoIndex(tiny_data)


def test_unique_ints_matches_numpy():
    from drcl.data.coco import unique_ints

    x = np.random.default_rng(0).integers(-50, 50, 1000)
    assert unique_ints(x).tolist() == np.unique(x).tolist()
    assert unique_ints(np.zeros(0, np.int64)).tolist() == []
