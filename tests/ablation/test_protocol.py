"""The fair protocol: one fine-tuning recipe per grid, only the init differs; refused otherwise."""

from pathlib import Path

import pytest

from drcl.ablation.rows import ROWS, component_overrides
from drcl.ablation.runner import (
    INIT_KEYS,
    UnfairComparisonError,
    canonical_recipe,
    check_fair,
    equal_compute_iters,
    finetune_config,
    load_ablate_config,
    plan_finetune_configs,
    pretrain_config,
    run_ablation,
)
from drcl.cli.main import main
from drcl.config import ConfigError, load_config
from drcl.finetune.job import FinetuneJob

CONFIGS = Path(__file__).resolve().parents[2] / "configs"
DEMO = CONFIGS / "ablate" / "demo.yaml"


def _ablate_file(tmp_path, extra: str = "", rows: str = "[generic, equal_compute, hcl, full]"):
    path = tmp_path / "abl.yaml"
    path.write_text(
        f"pretrain_config: {CONFIGS / 'pretrain/demo.yaml'}\n"
        f"finetune_config: {CONFIGS / 'finetune/demo.yaml'}\n"
        f"rows: {rows}\n{extra}"
    )
    return path


def test_component_overrides_switch_exactly_the_missing_terms():
    cfg = load_config(None, component_overrides(ROWS["hcl_lcl"].components))
    p = cfg.pretrain
    assert (p.hcl.weight, p.lcl.weight, p.ar.weight, p.sr.weight) == (1.0, 1.0, 0.0, 0.0)
    assert p.drb.enabled is False
    full = load_config(None, component_overrides(ROWS["full"].components)).pretrain
    assert (full.ar.weight, full.sr.weight, full.drb.enabled) == (1.0, 1.0, True)


def test_demo_grid_rows_differ_only_in_init(tmp_path):
    cfg = load_ablate_config(DEMO)
    plans, recipe = plan_finetune_configs(cfg, tmp_path, [0, 1, 2])
    assert set(plans[0]) == set(cfg.rows) and len(recipe) == 16
    ref = plans[0]["generic"]
    assert ref.model.norm == "bn" and ref.finetune.rfs and not ref.finetune.aligndet_rule
    for seed, rows in plans.items():
        for row, ft in rows.items():
            assert ft.train.seed == seed
            # every key but the init (and the equal-compute schedule) equals the baseline's
            a, b = (
                canonical_recipe(ft, ROWS[row]),
                canonical_recipe(plans[seed]["generic"], ROWS[row]),
            )
            assert a == b
    generic = str(tmp_path / "generic" / "generic.safetensors")
    assert (
        plans[1]["generic"].model.weights == generic and plans[1]["generic"].finetune.init is None
    )
    full = plans[1]["full"]
    assert full.finetune.init == str(
        tmp_path / "full" / "seed1" / "pretrain" / "pretrained.safetensors"
    )
    assert full.model.weights is None  # the pre-trained file carries the backbone


def test_pretraining_starts_from_the_row_init(tmp_path):
    cfg = load_ablate_config(_ablate_file(tmp_path, rows="[generic, full, random, random_full]"))
    assert pretrain_config(cfg, "full", 2, "G.safetensors").model.weights == "G.safetensors"
    assert pretrain_config(cfg, "full", 2, "G.safetensors").train.seed == 2
    assert pretrain_config(cfg, "random_full", 0, "G.safetensors").model.weights is None
    with pytest.raises(ValueError, match="no pre-training"):
        pretrain_config(cfg, "random", 0, None)
    ft = finetune_config(cfg, "random", 0, None, "G.safetensors")
    assert ft.model.weights is None and ft.finetune.init is None


def test_equal_compute_sees_pretraining_plus_finetuning_images():
    cfg = load_ablate_config(DEMO)
    pre = load_config(cfg.pretrain_config, cfg.pretrain_overrides)
    ft = load_config(cfg.finetune_config, cfg.finetune_overrides)
    seen = pre.train.max_iters * pre.train.batch_size + ft.train.max_iters * ft.train.batch_size
    iters = equal_compute_iters(cfg)
    assert iters * ft.train.batch_size >= seen > (iters - 1) * ft.train.batch_size
    assert iters == 200  # 100 x 8 + 100 x 8 images at batch 8 (configs/ablate/demo.yaml)


@pytest.mark.parametrize(
    ("pre_acc", "ft_acc", "want"),
    [(2, 1, 300), (1, 2, 150), (2, 2, 200), (3, 1, 400)],
)
def test_equal_compute_counts_accumulated_micro_batches(pre_acc, ft_acc, want):
    # demo: 100 pre-training and 100 fine-tuning steps at batch 8. With accumulate=a a step sees
    # 8a images: pre 2 -> (1600 + 800) / 8 = 300; ft 2 -> (800 + 1600) / 16 = 150 steps
    cfg = load_ablate_config(DEMO)
    cfg.pretrain_overrides = [*cfg.pretrain_overrides, f"train.accumulate={pre_acc}"]
    cfg.finetune_overrides = [*cfg.finetune_overrides, f"train.accumulate={ft_acc}"]
    assert equal_compute_iters(cfg) == want


@pytest.mark.parametrize(
    "override,key",
    [("train.lr=0.03", "train.lr"), ("model.norm=frozen_bn", "model.norm"),
     ("finetune.aligndet_rule=true", "finetune.aligndet_rule")],
)  # fmt: skip
def test_runner_refuses_a_row_with_another_recipe(tmp_path, override, key):
    path = _ablate_file(tmp_path, f"row_overrides:\n  hcl: [{override}]\n")
    work = tmp_path / "work"
    with pytest.raises(UnfairComparisonError, match=rf"{key}: generic=.* vs hcl="):
        run_ablation(path, work, seeds=2)
    assert not any(work.iterdir())  # refused before any row ran
    assert main(["ablate", str(path), "--work-dir", str(work)]) == 1


def test_a_pretraining_only_row_override_is_fair(tmp_path):
    path = _ablate_file(tmp_path, "row_overrides:\n  hcl: [pretrain.drb.schedule=linear]\n")
    plans, _ = plan_finetune_configs(load_ablate_config(path), tmp_path, [0])
    assert set(plans[0]) == {"generic", "equal_compute", "hcl", "full"}


def _job(overrides=()):
    """A fine-tuning job of the demo recipe (what check_fair compares)."""
    return FinetuneJob.from_config(load_config(CONFIGS / "finetune/demo.yaml", overrides), "w")


def test_check_fair_names_every_differing_key_and_the_equal_compute_schedule():
    base = _job()
    other = _job(["train.lr=0.1", "train.batch_size=4"])
    with pytest.raises(UnfairComparisonError) as err:
        check_fair({"generic": base, "full": other})
    assert "train.batch_size" in str(err.value) and "train.lr" in str(err.value)
    # the init keys alone may differ
    init = _job([f"{k}=x.safetensors" for k in INIT_KEYS])
    assert check_fair({"generic": base, "full": init}) == check_fair({"generic": base})
    longer = _job(["train.max_iters=999"])
    check_fair({"generic": base, "equal_compute": longer})  # its schedule is checked apart
    with pytest.raises(UnfairComparisonError, match="equal_compute=999 vs 320"):
        check_fair({"generic": base, "equal_compute": longer}, equal_iters=320)
    with pytest.raises(UnfairComparisonError, match="train.max_iters"):
        check_fair({"generic": base, "hcl": longer})
    with pytest.raises(ValueError, match="no rows"):
        check_fair({})
    # a pre-training key is not part of the recipe: fine-tuning does not read it
    assert check_fair({"generic": base, "full": _job(["pretrain.lcl.weight=0"])})


def test_bad_ablation_files_are_rejected(tmp_path):
    with pytest.raises(ConfigError, match="hcl_only"):
        load_ablate_config(_ablate_file(tmp_path, rows="[generic, hcl_only]"))
    with pytest.raises(ConfigError, match="'baseline'"):
        load_ablate_config(_ablate_file(tmp_path, "baseline: random\n"))
    with pytest.raises(ConfigError, match="seeds"):
        load_ablate_config(_ablate_file(tmp_path), ["seeds=0"])
    # non-ablation keys go to both stages of every row
    cfg = load_ablate_config(_ablate_file(tmp_path), ["seeds=5", "train.lr=0.01"])
    assert cfg.seeds == 5 and cfg.overrides == ["train.lr=0.01"]
