"""Frequency groups for small datasets: data.groups thresholds, a warning with suggested
thresholds when a group is empty, and n/a (never 0.0 / nan) for an empty group (issue 26,
point 4)."""

from __future__ import annotations

import json
import math

import pytest

from drcl.cli.main import main
from drcl.data.groups import (
    check_thresholds,
    empty_group_warning,
    lvis_frequency,
    suggest_thresholds,
)
from drcl.evaluation.format import format_metrics
from drcl.evaluation.lvis_eval import evaluate_detections

# the dataset: 76 images, 12 classes, under LVIS's 10 / 100: r 7 / c 5 / f 0
IMAGE_COUNTS = [1, 2, 2, 3, 4, 5, 7, 12, 15, 20, 30, 40]


def _small_dataset(path):
    images = [{"id": i + 1, "file_name": f"{i}.jpg", "height": 64, "width": 64} for i in range(76)]
    anns = []
    for k, n in enumerate(IMAGE_COUNTS):
        for j in range(n):
            image = (7 * k + j) % 76 + 1
            box = [float(4 * (k % 8)), float(4 * (k // 8)), 8.0, 8.0]
            anns.append(
                {"id": len(anns) + 1, "image_id": image, "category_id": 10 + k, "bbox": box}
            )
    cats = [{"id": 10 + k, "name": f"class{k}"} for k in range(len(IMAGE_COUNTS))]
    data = {"images": images, "annotations": anns, "categories": cats}
    path.write_text(json.dumps(data))
    return data


def test_lvis_rule_thresholds_and_their_check():
    assert [lvis_frequency(n) for n in (0, 10, 11, 100, 101)] == ["r", "r", "c", "c", "f"]
    assert [lvis_frequency(n, 2, 5) for n in (2, 3, 5, 6)] == ["r", "c", "c", "f"]
    with pytest.raises(ValueError, match="data.groups: need 0 <= rare_max < common_max"):
        check_thresholds(10, 10)


def test_suggested_thresholds_fill_all_three_groups_by_hand():
    # sorted counts 1 2 2 3 | 4 5 7 12 | 15 20 30 40: the 1/3 and 2/3 quantiles are 3 and 12
    assert suggest_thresholds(IMAGE_COUNTS) == (3, 12)
    groups = [lvis_frequency(n, 3, 12) for n in IMAGE_COUNTS]
    assert [groups.count(g) for g in "rcf"] == [4, 4, 4]
    assert suggest_thresholds([4, 4, 9]) is None  # two distinct counts: impossible
    assert suggest_thresholds([1, 2, 3]) == (1, 2)
    assert suggest_thresholds([5, 5, 5, 5, 6, 7]) == (5, 6)  # frequent stays non-empty


def test_empty_group_warning_names_group_and_suggestion():
    groups = [lvis_frequency(n) for n in IMAGE_COUNTS]
    text = empty_group_warning(IMAGE_COUNTS, groups, num_images=76)
    assert "no frequent class under rare_max=10 / common_max=100" in text
    assert "76 training images, 1-40 images per class" in text
    assert "try data.groups.rare_max=3 data.groups.common_max=12" in text
    assert (
        empty_group_warning(IMAGE_COUNTS, [lvis_frequency(n, 3, 12) for n in IMAGE_COUNTS]) is None
    )


def test_data_stats_warns_then_reports_three_groups(tmp_path, capsys):
    _small_dataset(tmp_path / "train.json")
    png = str(tmp_path / "tail.png")
    assert main(["data", "stats", str(tmp_path / "train.json"), "--out", png]) == 0
    out = capsys.readouterr().out
    assert "no frequent class" in out and "data.groups.rare_max=3 data.groups.common_max=12" in out
    argv = ["data", "stats", str(tmp_path / "train.json"), "--out", png]
    assert main([*argv, "--rare-max", "3", "--common-max", "12"]) == 0
    out = capsys.readouterr().out
    assert "warning" not in out and "(rare <= 3, common <= 12 images)" in out
    rows = [line.split() for line in out.splitlines()]
    classes = {r[0]: r[1] for r in rows if len(r) == 4 and r[0] in ("r", "c", "f")}
    assert classes == {"r": "4", "c": "4", "f": "4"}


def test_evaluate_reports_na_for_an_empty_group_and_all_groups_when_scaled(tmp_path, capsys):
    data = _small_dataset(tmp_path / "train.json")
    dets = [dict(a, score=0.9) for a in data["annotations"]]  # perfect: AP 1 per class
    (tmp_path / "dets.json").write_text(json.dumps(dets))
    gt, train = str(tmp_path / "train.json"), str(tmp_path / "train.json")
    m = evaluate_detections(gt, str(tmp_path / "dets.json"), train_ann=train)
    assert math.isnan(m["APf"]) and m["APr"] == pytest.approx(1.0)
    assert any("try data.groups.rare_max=3" in n for n in m["notes"])
    lines = format_metrics(m).splitlines()
    head = lines.index(next(line for line in lines if line.split() == ["APr", "APc", "APf"]))
    assert lines[head + 1].split() == ["100.0", "100.0", "n/a"]
    scaled = evaluate_detections(gt, dets, train_ann=train, rare_max=3, common_max=12)
    assert all(scaled[f"AP{g}"] == pytest.approx(1.0) for g in "rcf")
    assert not any("frequency groups: no" in n for n in scaled["notes"])
    argv = ["evaluate", "--gt", gt, "--dets", str(tmp_path / "dets.json"), "--train-ann", train]
    assert main([*argv, "--rare-max", "3", "--common-max", "12"]) == 0
    assert "r/c/f = 4/4/4" in capsys.readouterr().out


def test_scaled_rfs_threshold_keeps_lvis_factors_per_image_count(tmp_path, capsys):
    from drcl.data.groups import scaled_rfs_threshold

    # the demo configs' value: 1e-3 x 100170 / 1040 = 0.0963 (configs/finetune/demo.yaml: 0.1)
    assert scaled_rfs_threshold(1040) == pytest.approx(0.0963, abs=1e-4)
    assert scaled_rfs_threshold(100_170) == pytest.approx(1e-3)
    assert scaled_rfs_threshold(10**7) == 1e-3 and scaled_rfs_threshold(76) == 1.0
    # r(c) = sqrt(t / f(c)) is then LVIS's for the same image count: 10 images of 1040 vs LVIS
    t = scaled_rfs_threshold(1040)
    assert math.sqrt(t / (10 / 1040)) == pytest.approx(math.sqrt(1e-3 / (10 / 100_170)))
    _small_dataset(tmp_path / "train.json")
    assert (
        main(["data", "stats", str(tmp_path / "train.json"), "--out", str(tmp_path / "p.png")]) == 0
    )
    assert "finetune.rfs_threshold=1 pretrain.drb.threshold=1" in capsys.readouterr().out
