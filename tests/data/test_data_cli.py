"""``drcl data check`` and ``drcl data stats`` through the real CLI entry point."""

from __future__ import annotations

import json

from PIL import Image

from drcl.cli.main import main


def test_check_clean_exits_0(write_dataset, capsys):
    ann, image_dir, _ = write_dataset()
    assert main(["data", "check", str(ann), "--images", str(image_dir)]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out == [
        f"{ann}:image 3:id: info: image has no annotations",
        f"{ann}: 0 errors, 0 warnings, 1 info",
    ]


def test_check_warnings_allowed(write_dataset, tiny_data, capsys):
    tiny_data["categories"].append({"id": 9, "name": "unused"})
    ann, _, _ = write_dataset(tiny_data, images=False)
    assert main(["data", "check", str(ann)]) == 0
    assert "category 9:id: warning: category has no annotations" in capsys.readouterr().out


def test_check_broken_exits_1_and_prints_every_problem(write_dataset, tiny_data, capsys):
    tiny_data["annotations"][0]["bbox"] = [1, 1, 0, 2]
    tiny_data["annotations"][1]["category_id"] = 99
    ann, image_dir, _ = write_dataset(tiny_data)
    (image_dir / "c.png").unlink()
    assert main(["data", "check", str(ann), "--images", str(image_dir)]) == 1
    out = capsys.readouterr().out
    assert f"{ann}:image 3:file_name: error: image file not found: " in out
    assert f"{ann}:annotation 10:bbox: error: width and height must be positive" in out
    assert f"{ann}:annotation 11:category_id: error: unknown category id 99" in out
    # image 1 keeps no valid annotation (info); category 2 loses its only one (warning)
    assert f"{ann}:image 1:id: info: image has no annotations" in out
    assert "3 errors, 1 warning, 1 info (errors by record kind: annotation: 2, image: 1)" in out


def test_check_max_print(write_dataset, tiny_data, capsys):
    for a in tiny_data["annotations"]:
        a["bbox"] = [1, 1, -1, 1]
    ann, _, _ = write_dataset(tiny_data, images=False)
    assert main(["data", "check", str(ann), "--max-print", "1"]) == 1
    out = capsys.readouterr().out.splitlines()
    # 4 bad boxes; so both categories unused (2 warnings), all 3 images empty (3 infos):
    # 3 distinct findings, one line each
    assert out[0].endswith("(4 annotations; first 3 shown)")
    assert out[1] == "... 2 more not printed (--max-print)"
    assert out[2].endswith("4 errors, 2 warnings, 3 infos (errors by record kind: annotation: 4)")


def test_check_fix_out(write_dataset, tiny_data, tmp_path, capsys):
    tiny_data["annotations"][0]["bbox"] = [35, 1, 10, 3]
    ann, image_dir, _ = write_dataset(tiny_data)
    fixed = tmp_path / "fixed.json"
    args = ["data", "check", str(ann), "--images", str(image_dir), "--fix-out", str(fixed)]
    assert main(args) == 1  # the exit code describes the input
    out = capsys.readouterr().out
    assert "fix: annotation 10: clipped bbox: " in out
    assert f"wrote {fixed}: 1 changes; now 0 errors, 0 warnings, 1 info" in out
    assert json.loads(fixed.read_text())["annotations"][0]["bbox"] == [35, 1, 5, 3]
    assert main(["data", "check", str(fixed), "--images", str(image_dir)]) == 0


def test_check_bad_json_exits_1(tmp_path, capsys):
    path = tmp_path / "bad.json"
    path.write_text('{"images": [}')
    assert main(["data", "check", str(path)]) == 1
    assert f"{path}:file -:-: error: invalid JSON at line 1" in capsys.readouterr().out


def test_stats_cli(write_dataset, tiny_data, tmp_path, capsys):
    ann, _, _ = write_dataset(tiny_data, images=False, name="train.json")
    assert main(["data", "stats", str(ann)]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0] == f"{ann}: 3 images, 2 classes"
    assert out[1] == "frequency groups from LVIS rule on this json's image counts"
    # category 5 in images 1, 2 (3 instances); category 2 in image 1: both rare
    assert out[3].split() == ["r", "2", "2", "4"]
    assert out[4].split() == ["c", "0", "0", "0"]
    assert out[-1] == f"wrote {tmp_path / 'train_longtail.png'}"
    with Image.open(tmp_path / "train_longtail.png") as img:
        assert img.format == "PNG"
    custom = tmp_path / "out" / "curve.png"
    assert main(["data", "stats", str(ann), "--out", str(custom)]) == 0
    assert custom.is_file()


def test_stats_cli_bad_json(tmp_path, capsys):
    path = tmp_path / "train.json"
    path.write_text("{")
    assert main(["data", "stats", str(path)]) == 1
    assert "train.json: invalid JSON at line 1" in capsys.readouterr().err
