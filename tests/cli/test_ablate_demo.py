import csv
import json
import shutil
from pathlib import Path

import pytest

from drcl.cli.ablate import ROWS, ablation_table, component_overrides, load_ablate_config
from drcl.cli.main import main
from drcl.config import ConfigError, load_config


def test_component_overrides_switch_exactly_the_missing_terms():
    cfg = load_config(None, component_overrides(ROWS["hcl_lcl"]))
    p = cfg.pretrain
    assert (p.hcl.weight, p.lcl.weight, p.ar.weight, p.sr.weight) == (1.0, 1.0, 0.0, 0.0)
    assert p.drb.enabled is False
    full = load_config(None, component_overrides(ROWS["full"])).pretrain
    assert (full.ar.weight, full.sr.weight, full.drb.enabled) == (1.0, 1.0, True)


def test_ablation_table_marks_and_percent():
    md, table = ablation_table(
        {
            "baseline": {"AP": 0.1, "AP50": 0.2, "APr": float("nan"), "APc": 0.05, "APf": 0.3},
            "full": {"AP": 0.125, "AP50": 0.25, "APr": 0.0, "APc": 0.1, "APf": 0.4},
        }
    )
    rows = list(csv.reader(table.splitlines()))
    assert rows[0][:6] == ["row", "HCL", "LCL", "DRB", "AR", "SR"]
    assert rows[1] == [
        "baseline",
        "0",
        "0",
        "0",
        "0",
        "0",
        "10.00",
        "20.00",
        "n/a",
        "5.00",
        "30.00",
    ]
    assert rows[2][1:6] == ["1"] * 5 and rows[2][6] == "12.50"
    assert "| full | ✓ | ✓ | ✓ | ✓ | ✓ | 12.50 |" in md


def test_unknown_row_is_rejected(tmp_path):
    bad = tmp_path / "a.yaml"
    bad.write_text("rows: [baseline, hcl_only]\n")
    with pytest.raises(ConfigError, match="hcl_only"):
        load_ablate_config(bad)


@pytest.mark.slow  # fast: the table and override tests above; each stage's own tests
def test_ablate_two_rows_end_to_end_and_resumable(tiny_overrides, fast_overrides, tmp_path):
    cfg = tmp_path / "ablate.yaml"
    root = Path(__file__).resolve().parents[2] / "configs"
    cfg.write_text(
        f"pretrain_config: {root / 'pretrain/demo.yaml'}\n"
        f"finetune_config: {root / 'finetune/demo.yaml'}\n"
        f"overrides: {json.dumps([*tiny_overrides, *fast_overrides])}\n"
        "rows: [baseline, hcl]\n"
    )
    work = tmp_path / "abl"
    assert main(["ablate", str(cfg), "--work-dir", str(work)]) == 0
    rows = list(csv.reader((work / "ablation.csv").read_text().splitlines()))
    assert [r[0] for r in rows[1:]] == ["baseline", "hcl"]
    assert (work / "hcl" / "pretrain" / "pretrained.safetensors").is_file()
    assert not (work / "baseline" / "pretrain").exists()  # baseline: no pre-training
    # a second call finds every row done and only rewrites the table
    mtime = (work / "hcl" / "finetune" / "model_final.safetensors").stat().st_mtime
    assert main(["ablate", str(cfg), "--work-dir", str(work)]) == 0
    assert (work / "hcl" / "finetune" / "model_final.safetensors").stat().st_mtime == mtime


@pytest.mark.slow  # fast: each stage's own tests (pretrain, finetune, analysis, report)
def test_demo_pipeline_end_to_end(tiny_demo, tiny_overrides, fast_overrides, tmp_path, capsys):
    from drcl.cli.demo import run_demo

    work = tmp_path / "demo"
    shutil.copytree(Path(tiny_demo["train_images"]).parent, work / "data")
    keep = [o for o in tiny_overrides if not o.startswith("data.")]
    report = run_demo(work, extra=[*keep, *fast_overrides])
    out = capsys.readouterr().out
    html = (report / "index.html").read_text()
    assert "Box metrics" in html and "Training curves" in html
    for stage in ("2DRCL pre-training", "from random_init", "from 2drcl", "report"):
        assert stage in out
    assert "APr" in out and "random_init" in out and "2drcl" in out
