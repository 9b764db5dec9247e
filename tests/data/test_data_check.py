"""check_annotations / fix_annotations: every validation message, and fixed copies pass."""

from __future__ import annotations

import json
import math
import re

import pytest

from drcl.data.check import Problem, check_annotations, fix_annotations


def _truncate(path):
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def _ann(d, k=0):
    return d["annotations"][k]


def _segm(value):
    return lambda d, p: _ann(d).update(segmentation=value)


# name -> (mutate(data, image_dir), [(kind, record_id, field, severity, message regex)])
# the tiny dataset: images 1 (a.png 40x30), 2 (sub/b.png 32x32), 3 (c.png 20x24, no
# annotations); categories 5, 2; annotations 10, 11 on image 1 and 12, 13 on image 2.
CASES = {
    "category not an object": (
        lambda d, p: d["categories"].append("oops"),
        [("category", "#2", "-", "error", "record is str, expected an object")],
    ),
    "category missing id": (
        lambda d, p: d["categories"].append({"name": "x"}),
        [("category", "#2", "id", "error", "missing required key 'id'")],
    ),
    "category missing name": (
        lambda d, p: d["categories"].append({"id": 9}),
        [("category", 9, "name", "error", "missing required key 'name'")],
    ),
    "category id not an integer": (
        lambda d, p: d["categories"].append({"id": "9", "name": "x"}),
        [("category", "#2", "id", "error", "must be an integer, got '9'")],
    ),
    "category name empty": (
        lambda d, p: d["categories"][1].update(name=""),
        [("category", 2, "name", "error", "must be a non-empty string")],
    ),
    "category bad frequency": (
        lambda d, p: d["categories"][0].update(frequency="x"),
        [("category", 5, "frequency", "error", "must be 'r', 'c' or 'f', got 'x'")],
    ),
    "category bad image_count": (
        lambda d, p: d["categories"][0].update(image_count=-1),
        [("category", 5, "image_count", "error", "must be a non-negative integer, got -1")],
    ),
    "category duplicate id": (
        lambda d, p: d["categories"].append({"id": 5, "name": "dup"}),
        [("category", 5, "id", "error", r"duplicate id 5 \(first at position 0\)")],
    ),
    "category without annotations": (
        lambda d, p: d["categories"].append({"id": 9, "name": "nine"}),
        [("category", 9, "id", "warning", "category has no annotations")],
    ),
    "image not an object": (
        lambda d, p: d["images"].append(7),
        [("image", "#3", "-", "error", "record is int")],
    ),
    "image missing file_name": (
        lambda d, p: d["images"][2].pop("file_name"),
        [("image", 3, "file_name", "error", "missing required key 'file_name'")],
    ),
    "image absolute path": (
        lambda d, p: d["images"][2].update(file_name="/etc/passwd"),
        [("image", 3, "file_name", "error", "unsafe path: .*is absolute")],
    ),
    "image path escape": (
        lambda d, p: d["images"][2].update(file_name="../../etc/passwd"),
        [("image", 3, "file_name", "error", "unsafe path: .*escapes the image folder")],
    ),
    "image zero width": (
        lambda d, p: d["images"][2].update(width=0),
        [("image", 3, "width", "error", "must be a positive integer, got 0")],
    ),
    "image float height": (
        lambda d, p: d["images"][2].update(height=24.5),
        [("image", 3, "height", "error", "must be a positive integer, got 24.5")],
    ),
    "image neg_category_ids not a list": (
        lambda d, p: d["images"][0].update(neg_category_ids="5"),
        [("image", 1, "neg_category_ids", "error", "must be a list of integer category ids")],
    ),
    "image unknown not_exhaustive id": (
        lambda d, p: d["images"][0].update(not_exhaustive_category_ids=[5, 77]),
        [("image", 1, "not_exhaustive_category_ids", "error", r"unknown category ids \[77\]")],
    ),
    "image duplicate id": (
        lambda d, p: d["images"].append(dict(d["images"][2])),
        [("image", 3, "id", "error", r"duplicate id 3 \(first at position 2\)")],
    ),
    "image file missing": (
        lambda d, p: (p / "c.png").unlink(),
        [("image", 3, "file_name", "error", "image file not found: .*c.png")],
    ),
    "image file truncated": (
        lambda d, p: _truncate(p / "sub" / "b.png"),
        [("image", 2, "file_name", "error", "unreadable or truncated image .*b.png")],
    ),
    "image file not an image": (
        lambda d, p: (p / "c.png").write_bytes(b"hello"),
        [("image", 3, "file_name", "error", "unreadable or truncated image")],
    ),
    "image size disagrees": (
        lambda d, p: d["images"][2].update(width=21),
        [("image", 3, "width,height", "error", r"file is 20x24 \(EXIF applied\), json says 21x24")],
    ),
    "annotation not an object": (
        lambda d, p: d["annotations"].append([1]),
        [("annotation", "#4", "-", "error", "record is list")],
    ),
    "annotation missing id": (
        lambda d, p: _ann(d).pop("id"),
        [("annotation", "#0", "id", "error", "missing required key 'id'")],
    ),
    "annotation missing bbox": (
        lambda d, p: _ann(d).pop("bbox"),
        [("annotation", 10, "bbox", "error", "missing required key 'bbox'")],
    ),
    "annotation image_id not an integer": (
        lambda d, p: _ann(d).update(image_id="1"),
        [("annotation", 10, "image_id", "error", "must be an integer, got '1'")],
    ),
    "annotation category_id null": (
        lambda d, p: _ann(d).update(category_id=None),
        [("annotation", 10, "category_id", "error", "must be an integer, got None")],
    ),
    "annotation unknown image": (
        lambda d, p: _ann(d).update(image_id=99),
        [("annotation", 10, "image_id", "error", "unknown image id 99")],
    ),
    "annotation unknown category": (
        lambda d, p: _ann(d).update(category_id=99),
        [("annotation", 10, "category_id", "error", "unknown category id 99")],
    ),
    "bbox three numbers": (
        lambda d, p: _ann(d).update(bbox=[1, 2, 3]),
        [("annotation", 10, "bbox", "error", r"must be a list of 4 numbers \[x, y, w, h\]")],
    ),
    "bbox string value": (
        lambda d, p: _ann(d).update(bbox=[1, "2", 3, 4]),
        [("annotation", 10, "bbox", "error", "must be a list of 4 numbers")],
    ),
    "bbox NaN": (
        lambda d, p: _ann(d).update(bbox=[1, 2, math.nan, 4]),
        [("annotation", 10, "bbox", "error", "has NaN or infinite values")],
    ),
    "bbox inf": (
        lambda d, p: _ann(d).update(bbox=[1, 2, 3, math.inf]),
        [("annotation", 10, "bbox", "error", "has NaN or infinite values")],
    ),
    "bbox zero width": (
        lambda d, p: _ann(d).update(bbox=[1, 1, 0, 5]),
        [("annotation", 10, "bbox", "error", "width and height must be positive, got w=0, h=5")],
    ),
    "bbox negative height": (
        lambda d, p: _ann(d).update(bbox=[1, 1, 3, -2]),
        [("annotation", 10, "bbox", "error", "must be positive, got w=3, h=-2")],
    ),
    "bbox entirely outside": (
        lambda d, p: _ann(d).update(bbox=[45, 1, 3, 3]),
        [("annotation", 10, "bbox", "error", "lies entirely outside the 40x30 image")],
    ),
    "bbox partly outside": (
        lambda d, p: _ann(d).update(bbox=[35, 1, 10, 3]),
        [("annotation", 10, "bbox", "error", "extends outside the 40x30 image")],
    ),
    "bbox outside within tolerance": (lambda d, p: _ann(d).update(bbox=[35, 1, 5.5, 3]), []),
    "polygon with a string": (
        _segm([[1, 2, "a", 4, 5, 6]]),
        [("annotation", 10, "segmentation", "error", "polygon 0 must be a list of numbers")],
    ),
    "polygon odd length": (
        _segm([[1, 2, 3, 4, 5, 6], [1, 2, 3, 4, 5, 6, 7]]),
        [("annotation", 10, "segmentation", "error", r"polygon 1 needs .*\(>= 6\).*has 7")],
    ),
    "polygon too short": (
        _segm([[1, 2, 3, 4]]),
        [("annotation", 10, "segmentation", "error", "polygon 0 needs .* has 4")],
    ),
    "polygon NaN": (
        _segm([[1, 2, 3, math.nan, 5, 6]]),
        [("annotation", 10, "segmentation", "error", "polygon 0 has NaN or infinite")],
    ),
    "segmentation wrong type": (
        _segm("abc"),
        [("annotation", 10, "segmentation", "error", "polygon list or an RLE object, got str")],
    ),
    "RLE bad counts": (
        _segm({"size": [30, 40], "counts": [1.5]}),
        [("annotation", 10, "segmentation", "error", "RLE 'counts' must be a string or a list")],
    ),
    "RLE bad size": (
        _segm({"size": [30], "counts": "abc"}),
        [("annotation", 10, "segmentation", "error", r"RLE 'size' must be \[height, width\]")],
    ),
    "RLE size differs from image": (
        _segm({"size": [31, 40], "counts": "abc"}),
        [("annotation", 10, "segmentation", "error", r"RLE size \[31, 40\] differs .*\[30, 40\]")],
    ),
    "RLE counts do not cover the image": (
        _segm({"size": [30, 40], "counts": [10, 5]}),
        [("annotation", 10, "segmentation", "error", r"sum to 15, expected height\*width = 1200")],
    ),
    "iscrowd not 0 or 1": (
        lambda d, p: _ann(d).update(iscrowd=2),
        [("annotation", 10, "iscrowd", "error", "must be 0 or 1, got 2")],
    ),
    "area missing": (
        lambda d, p: _ann(d).pop("area"),
        [("annotation", 10, "area", "warning", r"missing \(COCO evaluation needs it\)")],
    ),
    "area negative": (
        lambda d, p: _ann(d).update(area=-1),
        [("annotation", 10, "area", "error", "must be a finite number >= 0, got -1")],
    ),
    "annotation duplicate id": (
        lambda d, p: d["annotations"].append(dict(_ann(d))),
        [("annotation", 10, "id", "error", r"duplicate id 10 \(first at position 0\)")],
    ),
}


def _broken(write_dataset, tiny_data, name):
    mutate, expected = CASES[name]
    ann, image_dir, _ = write_dataset(tiny_data)
    mutate(tiny_data, image_dir)
    ann.write_text(json.dumps(tiny_data))
    return ann, image_dir, expected


def _not_info(problems):
    return [p for p in problems if p.severity != "info"]


def test_clean_dataset_has_only_info(write_dataset):
    ann, image_dir, _ = write_dataset()
    problems = check_annotations(ann, image_dir)
    assert problems == [
        Problem(str(ann), "image", 3, "id", "image has no annotations", "info"),
    ]


@pytest.mark.parametrize("name", list(CASES))
def test_each_validation_message(write_dataset, tiny_data, name):
    ann, image_dir, expected = _broken(write_dataset, tiny_data, name)
    problems = _not_info(check_annotations(ann, image_dir))
    got = [(p.kind, p.record_id, p.field, p.severity) for p in problems]
    assert got == [e[:4] for e in expected], [str(p) for p in problems]
    for p, e in zip(problems, expected, strict=True):
        assert re.search(e[4], p.message), (p.message, e[4])
        assert p.file == str(ann)


@pytest.mark.parametrize("name", list(CASES))
def test_fixed_copy_passes_check(write_dataset, tiny_data, name, tmp_path):
    ann, image_dir, expected = _broken(write_dataset, tiny_data, name)
    before = ann.read_text()
    out = tmp_path / "fixed" / "clean.json"
    changes = fix_annotations(ann, out, image_dir)
    after = check_annotations(out, image_dir)
    assert [p for p in after if p.severity == "error"] == [], [str(p) for p in after]
    assert ann.read_text() == before  # the input is never touched
    if any(e[3] == "error" for e in expected):
        assert changes, "an error must lead to a change"
    if not expected:
        assert json.loads(out.read_text()) == json.loads(before)


def test_image_without_annotations_is_info(write_dataset):
    ann, image_dir, _ = write_dataset()
    (info,) = check_annotations(ann, image_dir)
    assert str(info) == f"{ann}:image 3:id: info: image has no annotations"


def test_file_level_problems(tmp_path):
    path = tmp_path / "x.json"
    path.write_text('{"images": [,]}')
    (p,) = check_annotations(path)
    assert (p.kind, p.record_id, p.field) == ("file", "-", "-")
    assert p.message.startswith("invalid JSON at line 1 column 13")
    (p,) = check_annotations(tmp_path / "missing.json")
    assert p.kind == "file" and p.message.startswith("cannot read")
    path.write_text("[1, 2]")
    (p,) = check_annotations(path)
    assert p.message == "top level is list, expected an object"
    path.write_text('{"images": {}, "annotations": []}')
    problems = check_annotations(path)
    assert [(p.field, p.message) for p in problems] == [
        ("images", "must be a list, got dict"),
        ("categories", "missing top-level key 'categories'"),
    ]


def test_fix_refuses_unparseable_json(tmp_path):
    path = tmp_path / "x.json"
    path.write_text("{")
    with pytest.raises(ValueError, match=r"x\.json:file -:-: error: invalid JSON"):
        fix_annotations(path, tmp_path / "out.json")
    assert not (tmp_path / "out.json").exists()


def test_fix_details(write_dataset, tiny_data, tmp_path):
    d = tiny_data
    d["annotations"][0].update(bbox=[35, 1, 10, 3])  # clipped to [35, 1, 5, 3]
    d["annotations"][1].pop("area")  # filled from the box: 5 * 5
    d["annotations"].append(dict(d["annotations"][2], bbox=[1, 1, 2, 2]))  # duplicate id 12
    d["annotations"].append({"id": 20, "image_id": 3, "category_id": 9, "bbox": [1, 1, 2, 2]})
    d["images"][0]["neg_category_ids"] = [2, 77]
    ann, image_dir, _ = write_dataset(d)
    (image_dir / "sub" / "b.png").unlink()  # image 2 dropped, and with it annotations 12, 13
    out = tmp_path / "clean.json"
    changes = fix_annotations(ann, out, image_dir)
    fixed = json.loads(out.read_text())
    assert [i["id"] for i in fixed["images"]] == [1, 3]
    assert fixed["images"][0]["neg_category_ids"] == []  # 77 unknown; 2 is annotated there
    assert [a["id"] for a in fixed["annotations"]] == [10, 11]
    assert fixed["annotations"][0]["bbox"] == [35, 1, 5, 3]
    assert fixed["annotations"][1]["area"] == 25.0
    assert fixed["info"] == {"description": "tiny"}  # other top-level keys kept
    text = [str(c) for c in changes]
    assert "image 2: dropped: file_name: image file not found: " in "\n".join(text)
    assert "annotation 12: dropped: its image 2 was dropped" in text
    assert "annotation 13: dropped: its image 2 was dropped" in text
    assert any(t.startswith("annotation 12: dropped: id: duplicate id 12") for t in text)
    assert "annotation 20: dropped: category_id: unknown category id 9" in text
    assert any(t.startswith("annotation 10: clipped bbox: ") for t in text)
    assert "annotation 11: set area: area = bbox width * height" in text
    assert "image 1: filtered neg_category_ids: unknown category ids [77]" in text
    both = "category ids [2] are annotated on this image and also listed as negative"
    assert f"image 1: filtered neg_category_ids: {both}" in text
    assert len(changes) == 9


def test_fix_cascades_dropped_category(write_dataset, tiny_data, tmp_path):
    tiny_data["categories"][0]["name"] = ""  # category 5 cannot be repaired
    tiny_data["images"][1]["not_exhaustive_category_ids"] = [5, 2]
    ann, image_dir, _ = write_dataset(tiny_data)
    out = tmp_path / "clean.json"
    changes = fix_annotations(ann, out)
    fixed = json.loads(out.read_text())
    assert [c["id"] for c in fixed["categories"]] == [2]
    assert [a["id"] for a in fixed["annotations"]] == [11]
    assert fixed["images"][1]["not_exhaustive_category_ids"] == [2]
    assert "annotation 12: dropped: its category 5 was dropped" in [str(c) for c in changes]


def test_fix_missing_top_level_list(tmp_path):
    path = tmp_path / "x.json"
    path.write_text(json.dumps({"images": [], "categories": []}))
    changes = fix_annotations(path, tmp_path / "y.json")
    assert [str(c) for c in changes] == ["file -: set annotations = []: missing or not a list"]
    assert check_annotations(tmp_path / "y.json") == []
