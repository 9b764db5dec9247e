"""data check on the classic mistakes of real data: wrong box formats, a mistyped image folder,
annotated-and-negative classes, and noisy repeated findings grouped into one line."""

from __future__ import annotations

import json

import pytest

from drcl.cli.main import main
from drcl.data.check import check_annotations, fix_annotations, group_problems


def _errors(problems):
    return [p for p in problems if p.severity == "error"]


def _big_data(n_images=5):
    """n 100x80 images, each with two boxes in [x, y, w, h] pixels and a matching polygon."""
    images, anns = [], []
    for i in range(1, n_images + 1):
        images.append({"id": i, "file_name": f"{i}.png", "width": 100, "height": 80})
        for k, (x, y, w, h) in enumerate([(10, 20, 30, 40), (50, 10, 40, 30)]):
            poly = [x, y, x + w, y, x + w, y + h, x, y + h]
            anns.append(
                {"id": 10 * i + k, "image_id": i, "category_id": 1 + k, "bbox": [x, y, w, h],
                 "area": float(w * h), "segmentation": [poly], "iscrowd": 0}
            )  # fmt: skip
    cats = [{"id": 1, "name": "a"}, {"id": 2, "name": "b"}]
    return {"images": images, "annotations": anns, "categories": cats}


def _write(tmp_path, data, name="ann.json"):
    path = tmp_path / name
    path.write_text(json.dumps(data))
    return path


def test_correct_boxes_raise_nothing(tmp_path):
    assert _errors(check_annotations(_write(tmp_path, _big_data()))) == []


def test_normalised_boxes_are_flagged_and_not_fixed(tmp_path):
    data = _big_data()
    for a in data["annotations"]:
        a["bbox"] = [v / 100 for v in a["bbox"]]
        a.pop("segmentation")
    path = _write(tmp_path, data)
    errors = _errors(check_annotations(path))
    assert len(errors) == 10 and all("looks normalised to 0-1" in p.message for p in errors)
    out = tmp_path / "fixed.json"
    with pytest.raises(ValueError, match="refuses .* wrong format.*normalised"):
        fix_annotations(path, out)
    assert not out.exists()


def test_xyxy_boxes_leaving_the_image_are_flagged_and_not_clipped(tmp_path, capsys):
    data = _big_data()
    for a in data["annotations"]:
        x, y, w, h = a["bbox"]
        a["bbox"] = [x, y, x + w, y + h]  # xyxy: (50, 10, 90, 40) leaves the 100 px image
        a.pop("segmentation")  # only the out-of-image share can tell
    path = _write(tmp_path, data)
    problems = check_annotations(path)
    (dataset,) = [p for p in problems if p.kind == "file"]
    assert "5 of 10 boxes (50%) end outside their image" in dataset.message
    assert "look like xyxy" in dataset.message
    out = tmp_path / "fixed.json"
    assert main(["data", "check", str(path), "--fix-out", str(out)]) == 1
    assert "refuses to clip or drop boxes" in capsys.readouterr().err
    assert not out.exists()


def test_a_few_boxes_slightly_outside_are_not_xyxy(tmp_path):
    data = _big_data()
    data["annotations"][0]["bbox"] = [10, 20, 30, 65]  # one box 5 px past the bottom
    data["annotations"][0].pop("segmentation")
    problems = _errors(check_annotations(_write(tmp_path, data)))
    assert [p.kind for p in problems] == ["annotation"]
    assert "extends outside" in problems[0].message


def test_xyxy_box_against_its_segmentation(tmp_path):
    data = _big_data()
    ann = data["annotations"][2]  # polygon spans [10, 20, 30, 40]
    ann["bbox"] = [10, 20, 40, 60]  # the same box written as x1, y1, x2, y2 (fits the image)
    (p,) = _errors(check_annotations(_write(tmp_path, data)))
    assert (p.record_id, p.field) == (20, "bbox")
    assert "looks like [x1, y1, x2, y2]" in p.message
    with pytest.raises(ValueError, match="refuses"):
        fix_annotations(_write(tmp_path, data), tmp_path / "out.json")


def test_annotated_and_negative_is_an_error_and_fixed(tmp_path):
    data = _big_data()
    data["images"][0]["neg_category_ids"] = [1]  # image 1 holds an annotation of class 1
    data["images"][1]["neg_category_ids"] = [3]  # unknown class 3: an error as well
    path = _write(tmp_path, data)
    errors = _errors(check_annotations(path))
    assert [(p.kind, p.record_id, p.field) for p in errors] == [
        ("image", 1, "neg_category_ids"),
        ("image", 2, "neg_category_ids"),
    ]
    assert "category ids [1] are annotated on this image and also listed as negative" in (
        errors[0].message
    )
    assert "unknown category ids [3]" in errors[1].message
    out = tmp_path / "fixed.json"
    fix_annotations(path, out)
    assert _errors(check_annotations(out)) == []
    assert [im.get("neg_category_ids") for im in json.loads(out.read_text())["images"][:2]] == [
        [],
        [],
    ]


def test_missing_images_folder_is_one_error(tmp_path, capsys):
    path = _write(tmp_path, _big_data())
    problems = check_annotations(path, tmp_path / "imgs_typo")
    (error,) = _errors(problems)
    assert (error.kind, error.field) == ("file", "--images")
    assert "images folder not found" in error.message
    assert main(["data", "check", str(path), "--images", str(tmp_path / "imgs_typo")]) == 1
    out = capsys.readouterr().out
    assert out.count("error:") == 1
    with pytest.raises(ValueError, match="images folder not found.*nothing written"):
        fix_annotations(path, tmp_path / "o.json", tmp_path / "imgs_typo")


def test_identical_findings_are_grouped(tmp_path, capsys):
    data = _big_data()
    data["categories"] += [{"id": 100 + k, "name": f"unused{k}"} for k in range(1040)]
    path = _write(tmp_path, data)
    problems = check_annotations(path)
    assert sum(p.message == "category has no annotations" for p in problems) == 1040
    lines = group_problems(problems)
    (line,) = [ln for ln in lines if "category has no annotations" in ln]
    assert line == (
        f"{path}:category 100, 101, 102:id: warning: category has no annotations "
        "(1040 categories; first 3 shown)"
    )
    assert main(["data", "check", str(path)]) == 0
    out = capsys.readouterr().out
    assert out.count("category has no annotations") == 1
    assert "0 errors, 1040 warnings" in out


def test_grouping_keeps_distinct_findings_apart():
    from drcl.data.check import Problem

    ps = [Problem("f", "image", i, "id", "m", "info") for i in (1, 2)]
    ps.append(Problem("f", "image", 3, "id", "other", "info"))
    assert group_problems(ps) == [
        "f:image 1, 2:id: info: m (2 images)",
        "f:image 3:id: info: other",
    ]
