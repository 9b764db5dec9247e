"""The smaller rough edges of issue 26, point 7 (the proposals ones are in
tests/proposals/test_proposals.py)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from drcl.cli.main import main
from drcl.config import load_config
from drcl.config.loader import ConfigError


def test_unknown_key_names_the_closest_and_the_allowed_keys(tmp_path):
    with pytest.raises(
        ConfigError, match=r"did you mean 'finetune\.loss'\?; allowed in 'finetune'"
    ):
        load_config(None, ["finetune.lossx=ce"])
    with pytest.raises(ConfigError, match=r"did you mean 'train'\?.*: data, finetune, model"):
        load_config(None, ["trian.lr=0.1"])
    cfg = tmp_path / "c.yaml"
    cfg.write_text("data:\n  min_sise: 64\n")
    with pytest.raises(ConfigError, match=r"c.yaml: key 'data.min_sise'.*'data.min_size'"):
        load_config(cfg)
    with pytest.raises(ConfigError, match="unknown key; allowed in 'model'"):  # nothing close
        load_config(None, ["model.zzzzzz=1"])


def test_a_wrong_option_prints_the_subcommand_usage(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["finetune", "configs/finetune/demo.yaml", "--work-dir", "w", "--device", "cuda"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("usage: drcl finetune") and "unrecognized arguments: --device" in err
    with pytest.raises(SystemExit):
        main(["data", "check", "a.json", "--foo"])
    assert capsys.readouterr().err.startswith("usage: drcl data check")


def _tiny_coco(root, file_names):
    images, anns = [], []
    for k, name in enumerate(file_names):
        path = root / "imgs" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.zeros((16, 16, 3), np.uint8)).save(path)
        images.append({"id": k + 1, "file_name": name, "width": 16, "height": 16})
        anns.append({"id": k + 1, "image_id": k + 1, "category_id": 1, "bbox": [1, 1, 8, 8]})
    data = {"images": images, "annotations": anns, "categories": [{"id": 1, "name": "a"}]}
    (root / "ann.json").write_text(json.dumps(data))
    return data


def test_data_check_says_when_images_were_not_checked(tmp_path, capsys):
    _tiny_coco(tmp_path, ["a.png", "b.png"])
    assert main(["data", "check", str(tmp_path / "ann.json")]) == 0
    assert "image files not checked (no --images ROOT)" in capsys.readouterr().out
    assert (
        main(["data", "check", str(tmp_path / "ann.json"), "--images", str(tmp_path / "imgs")]) == 0
    )
    assert "not checked" not in capsys.readouterr().out


def test_a_wrong_images_root_is_one_line_with_a_hint(tmp_path, capsys):
    _tiny_coco(tmp_path, ["sub dir/a.png", "sub dir/b.png", "sub dir/c.png"])
    # one level too high: the files are under imgs/, given the folder above
    assert main(["data", "check", str(tmp_path / "ann.json"), "--images", str(tmp_path)]) == 1
    lines = [line for line in capsys.readouterr().out.splitlines() if "not found" in line]
    assert len(lines) == 1
    assert "3 of 3 image files not found under --images" in lines[0]
    assert f"try --images {tmp_path / 'imgs'}" in lines[0]
    # one level too deep: file_name already holds 'sub dir/'
    deep = str(tmp_path / "imgs" / "sub dir")
    assert main(["data", "check", str(tmp_path / "ann.json"), "--images", deep]) == 1
    assert f"try --images {tmp_path / 'imgs'}" in capsys.readouterr().out
    # file_name with a folder the images do not have
    data = json.loads((tmp_path / "ann.json").read_text())
    for im in data["images"]:
        im["file_name"] = "photos/" + im["file_name"]
    (tmp_path / "extra.json").write_text(json.dumps(data))
    root = str(tmp_path / "imgs")
    assert main(["data", "check", str(tmp_path / "extra.json"), "--images", root]) == 1
    assert "file_name has an extra 'photos/'" in capsys.readouterr().out


def test_evaluate_takes_a_run_folder_as_dets(tmp_path, capsys):
    data = _tiny_coco(tmp_path, ["a.png", "b.png"])
    run = tmp_path / "run"
    (run / "eval").mkdir(parents=True)
    dets = [dict(a, score=0.9) for a in data["annotations"]]
    (run / "eval" / "detections_bbox.json").write_text(json.dumps(dets))
    gt = str(tmp_path / "ann.json")
    out = tmp_path / "m.json"
    assert main(["evaluate", "--gt", gt, "--dets", str(run), "--out", str(out)]) == 0
    assert json.loads(out.read_text())["AP"] == pytest.approx(1.0)
    assert "using " + str(run / "eval" / "detections_bbox.json") in capsys.readouterr().out
    assert main(["evaluate", "--gt", gt, "--dets", str(run / "eval")]) == 0
    (tmp_path / "empty").mkdir()
    assert main(["evaluate", "--gt", gt, "--dets", str(tmp_path / "empty")]) == 1
    err = capsys.readouterr().err
    assert "empty: a folder without" in err and "eval/detections_bbox.json" in err
