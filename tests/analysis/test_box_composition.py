"""The mechanism figure's data: class composition of the boxes LCL contrasts."""

from __future__ import annotations

import math
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from drcl.analysis.box_composition import (
    BoxCompositionMeter,
    composition,
    plot_box_composition,
)
from drcl.analysis.cli import cli_analyze
from drcl.analysis.runner import simulate_box_composition
from drcl.config import load_config
from drcl.engine.distributed import DistInfo
from drcl.pretrain.box_composition import BoxCompositionHook, label_groups
from drcl.pretrain.job import PretrainJob
from drcl.pretrain.loop import build_pretrain_data
from drcl.report.figures import box_composition_section

GROUPS = ["", "r", "c", "f"]


def test_composition_hand_computed() -> None:
    out = composition(np.array([7, 2, 1, 1]), GROUPS)  # index 0 (unknown class) is ignored
    assert (out["box_share_r"], out["box_share_c"], out["box_share_f"]) == (0.5, 0.25, 0.25)
    h = -(0.5 * math.log(0.5) + 2 * 0.25 * math.log(0.25)) / math.log(3)
    assert out["box_entropy"] == pytest.approx(h) and out["boxes_known"] == 4
    one = composition(np.array([0, 0, 5, 0]), GROUPS)
    assert one["box_entropy"] == 0.0 and one["box_share_c"] == 1.0
    assert math.isnan(composition(np.zeros(4), GROUPS)["box_share_r"])


def test_meter_counts_known_labels_and_resets() -> None:
    meter = BoxCompositionMeter(GROUPS)
    assert meter.summary() == {}
    meter.update(torch.tensor([1, 3, 0, -1, 3]))
    meter.update(torch.tensor([2]))
    out = meter.summary()
    assert (out["box_share_r"], out["box_share_c"], out["box_share_f"]) == (0.25, 0.25, 0.5)
    assert meter.summary() == {}


def test_simulation_replays_the_training_box_selection(tiny_overrides, tmp_path) -> None:
    over = [*tiny_overrides, "train.max_iters=3", "pretrain.drb.threshold=0.1"]
    cfg = load_config(None, over)
    rows = simulate_box_composition(PretrainJob.from_config(cfg, tmp_path / "sim"), interval=1)
    assert [r["iter"] for r in rows] == [1, 2, 3]
    data = build_pretrain_data(cfg.data, cfg.train, cfg.pretrain, tmp_path / "run", DistInfo())
    batches = data.batches()
    groups = label_groups(data.dataset.images.index)
    hook = BoxCompositionHook(groups)  # what the training run registers on its trainer
    for row in rows:
        batch = next(batches)
        hook.on_batch(batch)
        labels = batch.box_labels  # the selected boxes, before the crops drop any
        want = composition(np.bincount(labels[labels > 0], minlength=len(groups)), groups)
        for key in ("box_share_r", "box_share_c", "box_share_f", "box_entropy", "boxes_known"):
            assert row[key] == pytest.approx(want[key], nan_ok=True), key
    # the training path logs the boxes valid in both views, a subset of those selected
    logged = hook.logs()
    assert 0 < logged["boxes_known"] <= sum(r["boxes_known"] for r in rows)
    assert "boxes_known" not in data.logs() and hook.logs() == {}  # the hook's, and reset


def test_plot_report_section_and_cli(tiny_overrides, tmp_path) -> None:
    rows = [
        {"iter": i, "alpha": i / 4, **composition(np.array([0, i, 2, 5]), GROUPS)}
        for i in (1, 2, 3, 4)
    ]
    png = plot_box_composition({"a": rows, "b": rows}, tmp_path / "fig.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with pytest.raises(ValueError, match="no rows"):
        plot_box_composition({"a": rows, "b": []}, tmp_path / "bad.png")
    runs = [SimpleNamespace(name="drb", metrics=rows), SimpleNamespace(name="ft", metrics=[])]
    (fig,) = box_composition_section(runs, tmp_path)
    assert fig.src == "box_composition.png" and (tmp_path / fig.src).is_file()
    assert "not" in box_composition_section(runs[1:], tmp_path)[0].text
    out = tmp_path / "cli" / "mech.png"
    sim = ["--simulate", "configs/pretrain/demo.yaml", "--set", *tiny_overrides]
    args = SimpleNamespace(
        what="box-composition", rest=[*sim, "train.max_iters=2", "--out", str(out)]
    )
    assert cli_analyze(args) == 0
    assert out.is_file() and out.with_suffix(".json").is_file()
    with pytest.raises(ValueError, match="--simulate"):
        cli_analyze(SimpleNamespace(what="box-composition", rest=["--out", str(out)]))
