"""Rows compared on the tune split: each finished (row, seed) model evaluated there once, with the
statistics of results.json (evaluation replaced by a stub)."""

import json
from pathlib import Path

import pytest

from drcl.ablation.tune import main, tune_results
from drcl.config import ConfigError, load_config, save_config

CONFIGS = Path(__file__).resolve().parents[2] / "configs"


@pytest.fixture()
def grid(tmp_path):
    path = tmp_path / "grid.yaml"
    path.write_text(
        f"pretrain_config: {CONFIGS / 'pretrain/demo.yaml'}\n"
        f"finetune_config: {CONFIGS / 'finetune/demo.yaml'}\n"
        "rows: [generic, full, full_sup]\nseeds: 2\nrow_seeds: {full_sup: 1}\n"
        "curve: {iters: [100], eval_ann: T.json, eval_images: T}\n"
    )
    work = tmp_path / "w"
    ft = load_config(CONFIGS / "finetune/demo.yaml", ["finetune.init=somewhere.safetensors"])
    for row, seeds in (("generic", (0, 1)), ("full", (0, 1)), ("full_sup", (0,))):
        for s in seeds:
            run = work / row / f"seed{s}" / "finetune"
            run.mkdir(parents=True)
            save_config(ft, run / "config.yaml")
            (run / "model_final.safetensors").write_text(f"{row} {s}")
    return path, work


def test_rows_are_evaluated_on_tune_once(grid, monkeypatch):
    path, work = grid
    calls = []

    def evaluate(cfg):  # an EvaluateJob
        checkpoint, out = cfg.checkpoint, cfg.out_dir
        row, seed = Path(checkpoint).parts[-4], int(Path(checkpoint).parts[-3][4:])
        calls.append((row, seed, cfg.data.val_ann, cfg.data.val_images, cfg.finetune.init))
        ap = {"generic": 0.20, "full": 0.21, "full_sup": 0.25}[row] + 0.01 * seed
        Path(out).mkdir(parents=True, exist_ok=True)
        (Path(out) / "metrics_bbox.json").write_text(json.dumps({"AP": ap, "APr": ap / 2}))

    monkeypatch.setattr("drcl.finetune.runner.evaluate_checkpoint", evaluate)
    res = tune_results(path, work, ["generic", "full", "full_sup"])
    assert sorted(calls) == sorted(
        [(r, s, "T.json", "T", None) for r, s in
         [("generic", 0), ("generic", 1), ("full", 0), ("full", 1), ("full_sup", 0)]]
    )  # fmt: skip
    rows = res["rows"]
    assert rows["full"]["diff_vs_baseline"]["AP"]["mean"] == pytest.approx(1.0)
    assert rows["full_sup"]["AP"]["values"] == [pytest.approx(25.0), None]
    assert res["split"] == "T.json"
    assert "| full_sup |" in (work / "tune.md").read_text()
    calls.clear()
    tune_results(path, work, ["generic", "full"])  # kept evaluations are reused
    assert calls == []


def test_bad_tune_requests(grid, capsys):
    path, work = grid
    with pytest.raises(ConfigError, match="baseline included"):
        tune_results(path, work, ["full", "full_sup"])
    with pytest.raises(ConfigError, match="must be rows"):
        tune_results(path, work, ["generic", "hcl"])
    assert main([str(path), "--work-dir", str(work), "--rows", "full"]) == 1
    assert "baseline included" in capsys.readouterr().err
