"""The fine-tuning length curve: where AP flattens, the run's checkpoints, evaluation on the tune
split, resume (training and evaluation replaced by stubs; the real path is the smoke run)."""

import json
from pathlib import Path

import pytest

from drcl.ablation.curve import CurveConfig, check_curve, curve_overrides, pick_length
from drcl.ablation.curve.runner import main
from drcl.config import ConfigError
from drcl.engine.checkpoint import sha256_of

CONFIGS = Path(__file__).resolve().parents[2] / "configs"


def _pts(aps, step=100):
    return [{"iter": step * (i + 1), "AP": ap} for i, ap in enumerate(aps)]


def test_pick_length_hand_cases():
    pts = _pts([10.0, 20.0, 25.0, 25.5, 25.8])
    got = pick_length(pts, tolerance=1.0)
    # best 25.8 at 500; the first point >= 24.8 is 25.0 at 300; slope (25.8 - 25.5) / 100 per it
    assert (got["iters"], got["AP"], got["best_iters"]) == (300, 25.0, 500)
    assert got["gap_to_best"] == pytest.approx(0.8)
    assert got["last_slope_per_1k"] == pytest.approx(3.0)
    assert pick_length(pts, tolerance=0.0)["iters"] == 500
    capped = pick_length(pts, tolerance=1.0, max_iters=250)  # the budget: 100 and 200 only
    assert (capped["iters"], capped["best_iters"]) == (200, 200)
    assert capped["last_slope_per_1k"] == pytest.approx(100.0)
    assert pick_length([{"iter": 100, "AP": None}], 1.0)["iters"] is None
    assert pick_length([], 1.0)["last_slope_per_1k"] is None


def test_curve_overrides_keep_a_checkpoint_at_every_point():
    assert curve_overrides([100, 200, 300, 400, 600]) == [
        "train.max_iters=600",
        "train.checkpoint_every=100",
        "train.keep_checkpoints=7",
    ]
    assert curve_overrides([150, 450])[1] == "train.checkpoint_every=150"


@pytest.mark.parametrize(
    ("curve", "match"),
    [
        (CurveConfig(iters=[], eval_ann="a", eval_images="b"), "distinct positive"),
        (CurveConfig(iters=[100, 100], eval_ann="a", eval_images="b"), "distinct positive"),
        (CurveConfig(iters=[0, 100], eval_ann="a", eval_images="b"), "distinct positive"),
        (CurveConfig(iters=[100]), "tune split must be named"),
        (CurveConfig(iters=[100], eval_ann="a", eval_images="b", tolerance=-1), "tolerance"),
    ],
)
def test_bad_curves_are_refused(curve, match):
    with pytest.raises(ConfigError, match=match):
        check_curve(curve)


@pytest.fixture()
def curve_file(tmp_path):
    (tmp_path / "g.safetensors").write_text("g")
    path = tmp_path / "grid.yaml"
    path.write_text(
        f"pretrain_config: {CONFIGS / 'pretrain/demo.yaml'}\n"
        f"finetune_config: {CONFIGS / 'finetune/demo.yaml'}\n"
        "rows: [generic, full]\n"
        f"generic: {{weights: {tmp_path / 'g.safetensors'}}}\n"
        "curve: {iters: [300, 100, 200], eval_ann: T.json, eval_images: T, tolerance: 2.0}\n"
    )
    return path


def test_run_curve_one_run_evaluated_on_tune_and_resumed(curve_file, tmp_path, monkeypatch, capsys):
    calls = []

    def train(cfg):  # a FinetuneJob
        work_dir = cfg.work_dir
        assert cfg.stage == "finetune_curve" and cfg.resume
        calls.append(("train", cfg.train.max_iters, cfg.train.checkpoint_every, cfg.model.weights))
        Path(work_dir).mkdir(parents=True, exist_ok=True)
        for i in (100, 200, 300):
            path = Path(work_dir) / f"ckpt_{i:07d}.pt"
            path.write_text(f"checkpoint {i}")
            Path(f"{path}.sha256").write_text(sha256_of(path))

    def evaluate(cfg):  # an EvaluateJob
        checkpoint, work_dir = cfg.checkpoint, cfg.out_dir
        it = int(Path(checkpoint).stem.split("_")[1])
        calls.append(("eval", it, cfg.data.val_ann, cfg.data.val_images, cfg.model.weights))
        Path(work_dir).mkdir(parents=True, exist_ok=True)
        ap = {100: 0.10, 200: 0.19, 300: 0.20}[it]
        metrics = {"AP": ap, "AP50": 0.3, "APr": 0.05, "APc": 0.1, "APf": float("nan")}
        (Path(work_dir) / "metrics_bbox.json").write_text(json.dumps(metrics))

    monkeypatch.setattr("drcl.finetune.runner.train_detector", train)
    monkeypatch.setattr("drcl.finetune.runner.evaluate_checkpoint", evaluate)
    work = tmp_path / "w"
    assert main([str(curve_file), "--work-dir", str(work)]) == 0
    generic = str(tmp_path / "g.safetensors")
    assert calls[0] == ("train", 300, 100, generic)
    assert calls[1:] == [("eval", i, "T.json", "T", None) for i in (100, 200, 300)]
    res = json.loads((work / "curve" / "curve.json").read_text())
    assert [p["iter"] for p in res["points"]] == [100, 200, 300]
    assert res["points"][0]["AP"] == pytest.approx(10.0) and res["points"][0]["APf"] is None
    assert res["picked"]["iters"] == 200  # 19 is within 2 AP of the best, 20
    assert res["uncapped"] == res["picked"]  # no max_iters
    assert res["eval_ann"] == "T.json" and "caveat" in res
    lines = (work / "curve" / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(x)["iter"] for x in lines] == [100, 200, 300]
    assert '"picked"' in capsys.readouterr().out
    calls.clear()
    assert main([str(curve_file), "--work-dir", str(work)]) == 0  # resumed: nothing reruns
    assert calls == []


def test_curve_cli_refuses_a_grid_without_a_curve(tmp_path, capsys):
    path = tmp_path / "a.yaml"
    path.write_text("rows: [generic]\n")
    assert main([str(path), "--work-dir", str(tmp_path / "w")]) == 1
    assert "curve.iters" in capsys.readouterr().err
