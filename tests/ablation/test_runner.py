"""The runner's seeds, layout, resume and results.json, with training replaced by a stub; and the
smoke grid end to end (slow)."""

import json
import math
from pathlib import Path

import pytest

from drcl.ablation.results import markdown_table, summarize
from drcl.cli.main import main

CONFIGS = Path(__file__).resolve().parents[2] / "configs"
METRICS = ("AP", "AP50", "APr", "APc", "APf")


def _fake_metrics(row: str, seed: int) -> dict:
    # full is better than generic by 1 + 0.1 * seed AP points; APf undefined (NaN)
    base = 0.20 + 0.01 * seed + (0.01 + 0.001 * seed if row == "full" else 0.0)
    return {"AP": base, "AP50": base + 0.2, "APr": base / 2, "APc": base, "APf": math.nan}


@pytest.fixture()
def stub_training(monkeypatch):
    """Replace pre-training, fine-tuning and the generic backbone by file writers; log calls."""
    calls = []

    def pretrain(cfg):  # a PretrainJob: the config sections it reads, and its run folder
        work_dir = cfg.work_dir
        calls.append(("pretrain", str(work_dir), cfg.train.seed, cfg.model.weights))
        out = Path(work_dir) / "pretrained.safetensors"
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text("w")
        return out

    def finetune(cfg):  # a FinetuneJob: the config sections it reads, and its run folder
        work_dir = cfg.work_dir
        row, seed = Path(work_dir).parts[-3], int(Path(work_dir).parts[-2][4:])
        calls.append(("finetune", row, cfg.train.seed, cfg.finetune.init, cfg.model.weights))
        (Path(work_dir) / "eval").mkdir(parents=True)
        (Path(work_dir) / "eval" / "metrics_bbox.json").write_text(
            json.dumps(_fake_metrics(row, seed))
        )

    def generic(recipe, work_dir):
        calls.append(("generic", str(work_dir)))
        Path(work_dir).mkdir(parents=True)
        (Path(work_dir) / "generic.safetensors").write_text("g")
        return Path(work_dir) / "generic.safetensors"

    monkeypatch.setattr("drcl.pretrain.runner.run_pretrain", pretrain)
    monkeypatch.setattr("drcl.finetune.runner.run_finetune", finetune)
    monkeypatch.setattr("drcl.generic.train.make_generic_backbone", generic)
    return calls


def test_seeds_layout_results_and_resume(stub_training, tmp_path):
    work = tmp_path / "abl"
    argv = ["ablate", str(CONFIGS / "ablate/smoke.yaml"), "--work-dir", str(work), "--seeds", "3"]
    assert main(argv) == 0
    calls = stub_training
    assert [c[0] for c in calls].count("generic") == 1
    pre = [c for c in calls if c[0] == "pretrain"]
    assert [(Path(c[1]).parts[-3:], c[2]) for c in pre] == [
        (("full", f"seed{s}", "pretrain"), s) for s in range(3)
    ]
    assert all(c[3] == str(work / "generic" / "generic.safetensors") for c in pre)
    ft = [c[1:3] for c in calls if c[0] == "finetune"]
    assert ft == [(r, s) for s in range(3) for r in ("generic", "full")]  # seed-major
    res = json.loads((work / "results.json").read_text())
    assert res["seeds"] == [0, 1, 2] and res["baseline"] == "generic" and res["complete"]
    g, f = res["rows"]["generic"], res["rows"]["full"]
    assert g["AP"]["values"] == pytest.approx([20.0, 21.0, 22.0])
    assert g["AP"]["mean"] == pytest.approx(21.0) and g["AP"]["std"] == pytest.approx(1.0)
    assert g["APf"] == {"mean": None, "std": None, "values": [None, None, None]}
    assert "diff_vs_baseline" not in g
    # differences 1.0, 1.1, 1.2: mean 1.1, sd 0.1, half-width t(0.975, 2) * 0.1 / sqrt(3)
    d = f["diff_vs_baseline"]["AP"]
    half = 4.302653 * 0.1 / math.sqrt(3)
    assert d["mean"] == pytest.approx(1.1) and d["ci95"] == pytest.approx([1.1 - half, 1.1 + half])
    assert f["diff_vs_baseline"]["APf"]["mean"] is None
    assert set(res["wall_time_s"]["full"]) == {"0", "1", "2"}
    md = (work / "ablation.md").read_text()
    assert "| 21.00 ± 1.00 |" in md and "**+1.10 [+0.85, +1.35]**" in md
    # second call: everything finished, nothing runs again
    calls.clear()
    assert main(argv) == 0
    assert calls == []


def test_resume_runs_only_missing_seeds(stub_training, tmp_path):
    work = tmp_path / "abl"
    argv = ["ablate", str(CONFIGS / "ablate/smoke.yaml"), "--work-dir", str(work)]
    assert main([*argv, "--seeds", "1"]) == 0
    res = json.loads((work / "results.json").read_text())
    assert res["rows"]["full"]["diff_vs_baseline"]["AP"]["ci95"] is None  # K = 1: no interval
    assert res["rows"]["full"]["AP"]["std"] is None
    stub_training.clear()
    assert main([*argv, "--seeds", "2"]) == 0
    assert [c[1:3] for c in stub_training if c[0] == "finetune"] == [("generic", 1), ("full", 1)]


def test_markdown_marks_only_intervals_excluding_zero():
    per_seed = {
        "generic": {0: {"AP": 0.20}, 1: {"AP": 0.22}},
        "hcl": {0: {"AP": 0.21}, 1: {"AP": 0.21}},  # +1, -1: CI covers 0
        "full": {0: {"AP": 0.25}, 1: {"AP": 0.27}},  # +5, +5: sd 0, CI [5, 5]
    }
    res = {**summarize(per_seed, [0, 1], "generic"), "baseline": "generic"}
    md = markdown_table(res)
    assert "| hcl | +0.00 [-12.71, +12.71] |" in md
    assert "| full | **+5.00 [+5.00, +5.00]** |" in md


@pytest.mark.slow
def test_smoke_grid_end_to_end(tiny_overrides, tmp_path):
    data = [o for o in tiny_overrides if o.startswith("data.")]
    work = tmp_path / "abl"
    argv = ["ablate", str(CONFIGS / "ablate/smoke.yaml"), "--work-dir", str(work), "--seeds", "2"]
    assert main([*argv, *data]) == 0
    res = json.loads((work / "results.json").read_text())
    assert set(res["rows"]) == {"generic", "full"} and res["complete"]
    for row in res["rows"].values():
        assert set(METRICS) <= set(row) and len(row["AP"]["values"]) == 2
    assert set(res["rows"]["full"]["diff_vs_baseline"]) == set(METRICS)
    assert (work / "generic" / "generic.safetensors").is_file()
    assert (work / "full" / "seed1" / "pretrain" / "pretrained.safetensors").is_file()
    mtime = (work / "full" / "seed1" / "finetune" / "model_final.safetensors").stat().st_mtime
    assert main([*argv, *data]) == 0
    assert (
        work / "full" / "seed1" / "finetune" / "model_final.safetensors"
    ).stat().st_mtime == mtime


def test_stage_config_is_the_one_builder_of_the_grid_configs(tmp_path):
    """Each stage's config: the recipe file with the shared, the stage's, the row's overrides,
    the seed and the stage's inputs, in that order (a later one wins)."""
    from drcl.ablation.runner import load_ablate_config, pretrain_config, stage_config
    from drcl.config import load_config

    path = tmp_path / "a.yaml"
    path.write_text(
        f"pretrain_config: {CONFIGS / 'pretrain/demo.yaml'}\n"
        f"finetune_config: {CONFIGS / 'finetune/demo.yaml'}\n"
        "rows: [generic, hcl]\n"
        "overrides: [train.lr=0.03, train.seed=9]\n"
        "finetune_overrides: [train.lr=0.01]\n"
        "row_overrides: {hcl: [pretrain.hcl.temperature=0.3, pretrain.lcl.weight=0.5]}\n"
    )
    cfg = load_ablate_config(path)
    ft = stage_config(cfg, "finetune", seed=2)
    assert (ft.train.lr, ft.train.seed) == (0.01, 2)  # the stage's own over the shared ones
    assert ft == load_config(CONFIGS / "finetune/demo.yaml", ["train.lr=0.01", "train.seed=2"])
    pre = stage_config(cfg, "pretrain", "hcl", 1, ["model.weights=g.safetensors"])
    assert (pre.train.lr, pre.train.seed, pre.model.weights) == (0.03, 1, "g.safetensors")
    # the row's terms (hcl alone: lcl off), then its own overrides (lcl.weight 0.5 wins)
    assert (pre.pretrain.hcl.temperature, pre.pretrain.lcl.weight) == (0.3, 0.5)
    assert (pre.pretrain.ar.weight, pre.pretrain.drb.enabled) == (0.0, False)
    assert pre == pretrain_config(cfg, "hcl", 1, "g.safetensors")
    with pytest.raises(ValueError, match="stage 'eval': allowed pretrain, box, finetune"):
        stage_config(cfg, "eval")
