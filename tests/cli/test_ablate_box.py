"""The box-stage rows of `drcl ablate`: which stages run, from which weights, shared folders."""

import json
from pathlib import Path

import pytest

from drcl.cli import ablate
from drcl.cli.ablate import load_ablate_config, run_row

ROOT = Path(__file__).resolve().parents[2] / "configs"


@pytest.fixture()
def calls(monkeypatch):
    """Stand-ins for the training stages that record what they were asked to do."""
    import drcl.finetune.runner
    import drcl.pretrain.runner

    log = []

    def fake_pretrain(cfg, work_dir, resume=False):
        log.append(("pretrain", cfg.pretrain.stage, cfg.pretrain.box.init, Path(work_dir)))
        out = Path(work_dir) / "pretrained.safetensors"
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text("w")
        return out

    def fake_finetune(cfg, work_dir, init=None, resume=False):
        log.append(("finetune", init, Path(work_dir)))
        metrics = Path(work_dir) / "eval" / "metrics_bbox.json"
        metrics.parent.mkdir(parents=True)
        metrics.write_text(json.dumps({"AP": 0.1}))

    monkeypatch.setattr(drcl.pretrain.runner, "run_pretrain", fake_pretrain)
    monkeypatch.setattr(drcl.finetune.runner, "run_finetune", fake_finetune)
    return log


def _cfg(tmp_path):
    path = tmp_path / "a.yaml"
    path.write_text(
        f"pretrain_config: {ROOT / 'pretrain/demo.yaml'}\n"
        f"finetune_config: {ROOT / 'finetune/demo.yaml'}\n"
        f"box_config: {ROOT / 'pretrain/demo_box.yaml'}\n"
        "rows: [2drcl, 2drcl_box, box_only]\n"
    )
    return load_ablate_config(path)


def test_box_rows_chain_their_stages(calls, tmp_path):
    cfg, work = _cfg(tmp_path), tmp_path / "w"
    assert cfg.box_config.endswith("demo_box.yaml")
    for row in cfg.rows:
        assert run_row(row, cfg, work) == {"AP": 0.1}
    image_ckpt = work / "2drcl" / "pretrain" / "pretrained.safetensors"
    box_ckpt = str(work / "2drcl_box/box/pretrained.safetensors")
    random_box_ckpt = str(work / "box_only/box/pretrained.safetensors")
    assert calls == [
        ("pretrain", "image", None, work / "2drcl/pretrain"),
        ("finetune", str(image_ckpt), work / "2drcl/finetune"),
        # 2drcl_box: no second image stage, the box stage starts from the 2drcl row's weights
        ("pretrain", "box", str(image_ckpt), work / "2drcl_box/box"),
        ("finetune", box_ckpt, work / "2drcl_box/finetune"),
        # box_only: a random backbone
        ("pretrain", "box", None, work / "box_only/box"),
        ("finetune", random_box_ckpt, work / "box_only/finetune"),
    ]


def test_2drcl_box_first_pretrains_2drcl_when_that_row_has_not_run(calls, tmp_path):
    run_row("2drcl_box", _cfg(tmp_path), tmp_path / "w")
    box_ckpt = str(tmp_path / "w/2drcl_box/box/pretrained.safetensors")
    assert [c[:2] for c in calls] == [
        ("pretrain", "image"),
        ("pretrain", "box"),
        ("finetune", box_ckpt),
    ]
    assert calls[0][3] == tmp_path / "w" / "2drcl" / "pretrain"


def test_default_rows_are_still_the_paper_grid():
    assert ablate.AblateConfig().rows == [
        "baseline",
        "hcl",
        "hcl_lcl",
        "hcl_lcl_drb",
        "hcl_lcl_drb_ar",
        "hcl_lcl_drb_sr",
        "full",
    ]
