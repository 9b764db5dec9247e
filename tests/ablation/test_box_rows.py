"""The box-stage rows of `drcl ablate` (issue 13) under the fair protocol: which stages run, from
which weights, in which folders; and the fairness check covers them."""

from pathlib import Path

import pytest

from drcl.ablation.rows import DEFAULT_ROWS, ROWS
from drcl.ablation.runner import (
    AblateConfig,
    UnfairComparisonError,
    load_ablate_config,
    plan_finetune_configs,
    run_ablation,
)
from drcl.config import ConfigError

ROOT = Path(__file__).resolve().parents[2] / "configs"


@pytest.fixture()
def calls(monkeypatch):
    """Stand-ins for the training stages that record what they were asked to do."""
    log = []

    def fake_pretrain(cfg):  # a PretrainJob: the config sections it reads, and its run folder
        work_dir = cfg.work_dir
        stage = str(cfg.pretrain.stage)
        log.append(("pretrain", stage, cfg.pretrain.box.init, cfg.model.weights, Path(work_dir)))
        out = Path(work_dir) / "pretrained.safetensors"
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text("w")
        return out

    def fake_finetune(cfg):  # a FinetuneJob
        work_dir = cfg.work_dir
        log.append(("finetune", cfg.finetune.init, cfg.model.weights, Path(work_dir)))
        metrics = Path(work_dir) / "eval" / "metrics_bbox.json"
        metrics.parent.mkdir(parents=True)
        metrics.write_text('{"AP": 0.1, "AP50": 0.2, "APr": 0.0, "APc": 0.1, "APf": 0.2}')

    monkeypatch.setattr("drcl.pretrain.runner.run_pretrain", fake_pretrain)
    monkeypatch.setattr("drcl.finetune.runner.run_finetune", fake_finetune)
    return log


def _config(tmp_path, rows, extra="", box="pretrain/demo_box.yaml"):
    generic = tmp_path / "generic.safetensors"
    generic.write_text("g")
    path = tmp_path / "a.yaml"
    path.write_text(
        f"pretrain_config: {ROOT / 'pretrain/demo.yaml'}\n"
        f"finetune_config: {ROOT / 'finetune/demo.yaml'}\n"
        f"box_config: {ROOT / box}\n"
        f"rows: [{', '.join(rows)}]\nbaseline: {rows[0]}\nseeds: 1\n"
        f"generic: {{weights: {generic}}}\n{extra}"
    )
    return path, str(generic)


def test_box_rows_chain_their_stages(calls, tmp_path):
    path, generic = _config(tmp_path, ["2drcl", "2drcl_box", "box_only"])
    work = tmp_path / "w"
    run_ablation(path, work)
    image = work / "2drcl/seed0/pretrain"
    box_ckpt = work / "2drcl_box/seed0/box/pretrained.safetensors"
    assert calls == [
        ("pretrain", "image", None, generic, image),  # 2DRCL starts from the generic backbone
        ("finetune", str(image / "pretrained.safetensors"), None, work / "2drcl/seed0/finetune"),
        # 2drcl_box: no second image stage, the box stage starts from the 2drcl row's weights
        ("pretrain", "box", str(image / "pretrained.safetensors"), None, box_ckpt.parent),
        ("finetune", str(box_ckpt), None, work / "2drcl_box/seed0/finetune"),
        # box_only: the box stage on the (frozen) generic backbone
        ("pretrain", "box", None, generic, work / "box_only/seed0/box"),
        (
            "finetune",
            str(work / "box_only/seed0/box/pretrained.safetensors"),
            None,
            work / "box_only/seed0/finetune",
        ),
    ]


def test_2drcl_box_first_pretrains_2drcl_when_that_row_has_not_run(calls, tmp_path):
    path, _ = _config(tmp_path, ["generic", "2drcl_box"])
    run_ablation(path, tmp_path / "w")
    pre = [(c[1], c[4]) for c in calls if c[0] == "pretrain"]
    assert pre == [
        ("image", tmp_path / "w/2drcl/seed0/pretrain"),
        ("box", tmp_path / "w/2drcl_box/seed0/box"),
    ]


def test_fair_protocol_covers_the_box_rows(tmp_path):
    path, _ = _config(
        tmp_path,
        ["generic", "2drcl", "box_only", "2drcl_box"],
        "row_overrides: {2drcl_box: [finetune.rfs=false]}\n",
    )
    with pytest.raises(UnfairComparisonError, match="finetune.rfs"):
        plan_finetune_configs(load_ablate_config(path), tmp_path / "w", [0])
    # a box-stage-only override is fair: fine-tuning does not read the pretrain section
    path, _ = _config(
        tmp_path,
        ["generic", "2drcl_box"],
        "row_overrides: {2drcl_box: [pretrain.box.momentum=0.9]}\n",
    )
    plans, _ = plan_finetune_configs(load_ablate_config(path), tmp_path / "w", [0])
    assert plans[0]["2drcl_box"].finetune.init.endswith(
        "2drcl_box/seed0/box/pretrained.safetensors"
    )


def test_a_box_config_without_the_box_stage_is_refused(tmp_path):
    path, _ = _config(tmp_path, ["generic", "box_only"], box="pretrain/demo.yaml")
    with pytest.raises(ConfigError, match="pretrain.stage must be box"):
        plan_finetune_configs(load_ablate_config(path), tmp_path / "w", [0])


def test_shipped_box_ablation_and_default_rows():
    cfg = load_ablate_config(ROOT / "ablate/demo_box.yaml")
    assert cfg.rows == ["generic", "2drcl", "box_only", "2drcl_box"]
    assert cfg.box_config.endswith("pretrain/demo_box.yaml")
    assert ROWS["2drcl"] == ROWS["full"]  # the same 2DRCL row, under the box comparison's name
    # the box rows are opt-in: the default grid is the paper's
    assert AblateConfig().rows == DEFAULT_ROWS
    assert not {"2drcl", "box_only", "2drcl_box"} & set(DEFAULT_ROWS)
