"""The run-folder layout and the one ``metrics.jsonl`` reader."""

from __future__ import annotations

from pathlib import Path

import pytest

from drcl.utils.run_dir import RunDir, detections_name, metrics_name, read_metrics


def test_run_dir_paths(tmp_path):
    run = RunDir(str(tmp_path))
    assert run.path == tmp_path
    assert run.config == tmp_path / "config.yaml"
    assert run.metrics == tmp_path / "metrics.jsonl"
    assert run.cost == tmp_path / "cost.json"
    assert run.model_final == tmp_path / "model_final.safetensors"
    assert run.pretrained == tmp_path / "pretrained.safetensors"
    assert run.pretrained_info == tmp_path / "pretrained.json"
    assert run.eval_metrics() == tmp_path / "eval" / "metrics_bbox.json"
    assert run.eval_metrics("segm") == tmp_path / "eval" / "metrics_segm.json"
    assert run.detections() == tmp_path / "eval" / "detections_bbox.json"
    assert (metrics_name("segm"), detections_name()) == (
        "metrics_segm.json",
        "detections_bbox.json",
    )


def _write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def test_read_metrics_rows_in_order_skipping_blank_and_non_objects(tmp_path):
    path = _write(tmp_path / "m.jsonl", '{"iter": 1}\n\n[1, 2]\n{"iter": 2, "loss": 0.5}\n')
    assert read_metrics(path) == [{"iter": 1}, {"iter": 2, "loss": 0.5}]


def test_read_metrics_skips_a_torn_last_line(tmp_path):
    path = _write(tmp_path / "m.jsonl", '{"iter": 1}\n{"iter": 2, "lo')
    assert read_metrics(path) == [{"iter": 1}]


def test_read_metrics_names_a_broken_middle_line(tmp_path):
    path = _write(tmp_path / "m.jsonl", '{"iter": 1}\n{"iter": \n{"iter": 3}\n')
    with pytest.raises(ValueError, match=r"m\.jsonl: invalid JSON at line 2"):
        read_metrics(path)


def test_read_metrics_empty_file(tmp_path):
    assert read_metrics(_write(tmp_path / "m.jsonl", "")) == []
