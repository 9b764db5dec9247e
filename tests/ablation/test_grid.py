"""Issue 20's grid: the full_sup row, doses in epochs (ROW@Nep, pretrain_epochs), detector
proposals, row_seeds, the dose in results.json, and the time plan."""

import json
import math
from pathlib import Path

import pytest

from drcl.ablation.dose import dose_in_epochs, dose_overrides
from drcl.ablation.plan import Costs, plan_grid
from drcl.ablation.rows import ROWS, component_overrides, row_spec
from drcl.ablation.runner import (
    equal_compute_iters,
    load_ablate_config,
    plan_finetune_configs,
    pretrain_config,
    resolve_grid,
    run_ablation,
)
from drcl.config import ConfigError, load_config

CONFIGS = Path(__file__).resolve().parents[2] / "configs"


def _ablate_file(tmp_path, rows, extra="", data=None):
    overrides = "".join(f"  - {o}\n" for o in (data or []))
    path = tmp_path / "grid.yaml"
    path.write_text(
        f"pretrain_config: {CONFIGS / 'pretrain/demo.yaml'}\n"
        f"finetune_config: {CONFIGS / 'finetune/demo.yaml'}\n"
        f"rows: [{', '.join(rows)}]\nseeds: 2\n"
        + (f"overrides:\n{overrides}" if overrides else "")
        + f"generic: {{weights: {tmp_path / 'g.safetensors'}}}\n{extra}"
    )
    (tmp_path / "g.safetensors").write_text("g")
    return path


def _data(tiny_demo, batch=4, accumulate=1):
    return [
        f"data.train_ann={tiny_demo['train_ann']}",
        f"data.train_images={tiny_demo['train_images']}",
        f"data.val_ann={tiny_demo['val_ann']}",
        f"data.val_images={tiny_demo['val_images']}",
        f"train.batch_size={batch}",
        f"train.accumulate={accumulate}",
    ]


def _num_images(tiny_demo) -> int:
    return len(json.loads(Path(tiny_demo["train_ann"]).read_text())["images"])


# ---- full_sup -------------------------------------------------------------------------------


def test_full_sup_is_full_with_supervised_lcl_and_fine_tunes_fairly(tmp_path):
    cfg = load_ablate_config(_ablate_file(tmp_path, ["generic", "full", "full_sup"]))
    full = pretrain_config(cfg, "full", 0, "g").pretrain
    sup = pretrain_config(cfg, "full_sup", 0, "g").pretrain
    assert full.lcl.supervised is False and sup.lcl.supervised is True
    for p in (full, sup):
        assert (p.hcl.weight, p.lcl.weight, p.ar.weight, p.sr.weight) == (1.0,) * 4
        assert p.drb.enabled is True
    sup.lcl.supervised = False
    assert sup == full  # nothing else differs
    plans, _ = plan_finetune_configs(cfg, tmp_path, [0, 1])  # fair: no UnfairComparisonError
    assert plans[1]["full_sup"].finetune.init.endswith(
        "full_sup/seed1/pretrain/pretrained.safetensors"
    )


def test_supervision_needs_lcl():
    assert component_overrides(("hcl", "lcl", "sup"))[-1] == "pretrain.lcl.supervised=true"
    with pytest.raises(ValueError, match="'sup' with 'lcl'"):
        component_overrides(("hcl", "sup"))
    with pytest.raises(ValueError, match="allowed"):
        component_overrides(("hcl", "bogus"))


# ---- doses ----------------------------------------------------------------------------------


def test_dose_row_names():
    spec = ROWS["full@12ep"]
    assert spec.pretrain_epochs == 12.0 and spec.components == ROWS["full"].components
    assert ROWS["hcl_lcl@0.5ep"].pretrain_epochs == 0.5
    assert ROWS["full_sup@3ep"].components == ROWS["full_sup"].components
    assert "full@1ep" in ROWS and "full" in ROWS and ROWS["full"].pretrain_epochs is None
    for bad in ("generic@3ep", "equal_compute@1ep", "2drcl_box@1ep", "full@0ep", "full@3",
                "full@ep", "nope@1ep", "full@-1ep"):  # fmt: skip
        assert bad not in ROWS
        with pytest.raises(KeyError):
            row_spec(bad)


def test_unknown_dose_row_is_refused_with_the_allowed_forms(tmp_path):
    with pytest.raises(ConfigError, match=r"unknown \['generic@2ep'\]"):
        load_ablate_config(_ablate_file(tmp_path, ["generic", "generic@2ep"]))


def test_dose_iterations_follow_images_batch_and_accumulate(tiny_demo):
    n = _num_images(tiny_demo)
    cfg = load_config(CONFIGS / "pretrain/demo.yaml", _data(tiny_demo, batch=4, accumulate=2))
    ipe = math.ceil(n / 8)  # one optimizer iteration sees batch * accumulate = 8 images
    assert (
        dose_in_epochs(cfg.data, cfg.train, 3).iters == 3 * ipe
        and dose_in_epochs(cfg.data, cfg.train, 3).iters_per_epoch == ipe
    )
    assert dose_in_epochs(cfg.data, cfg.train, 0.5).iters == math.ceil(0.5 * ipe)
    assert dose_overrides(cfg.data, cfg.train, 12.0) == [f"train.max_iters={12 * ipe}"]
    assert dose_overrides(cfg.data, cfg.train, None) == []
    with pytest.raises(ConfigError, match="epochs must be > 0"):
        dose_in_epochs(cfg.data, cfg.train, 0)


def test_dose_needs_the_training_annotations(tmp_path):
    cfg = load_config(CONFIGS / "pretrain/demo.yaml", [f"data.train_ann={tmp_path / 'no.json'}"])
    with pytest.raises(ConfigError, match=r"data.train_ann: file not found: .*no.json"):
        dose_in_epochs(cfg.data, cfg.train, 1)
    (tmp_path / "bad.json").write_text('{"annotations": []}')
    cfg.data.train_ann = str(tmp_path / "bad.json")
    with pytest.raises(ConfigError, match="has no 'images' list"):
        dose_in_epochs(cfg.data, cfg.train, 1)


def test_probe_every_epochs_in_iterations(tiny_demo):
    cfg = load_config(CONFIGS / "pretrain/demo.yaml", _data(tiny_demo, batch=4))
    ipe = math.ceil(_num_images(tiny_demo) / 4)
    assert dose_overrides(cfg.data, cfg.train, None, 2.0) == [f"pretrain.probe.every={2 * ipe}"]
    with pytest.raises(ConfigError, match="probe_every_epochs must be >= 0"):
        dose_overrides(cfg.data, cfg.train, None, -1.0)
    assert dose_overrides(cfg.data, cfg.train, None, 0.0) == []


def test_grid_dose_sets_pretraining_and_equal_compute(tiny_demo, tmp_path):
    n = _num_images(tiny_demo)
    rows = ["generic", "equal_compute", "full", "full@1ep"]
    path = _ablate_file(tmp_path, rows, "pretrain_epochs: 2\n", _data(tiny_demo, batch=4))
    cfg = resolve_grid(load_ablate_config(path), tmp_path)
    resolve_grid(cfg, tmp_path)  # idempotent
    ipe = math.ceil(n / 4)
    assert cfg.pretrain_overrides == [f"train.max_iters={2 * ipe}"]
    assert pretrain_config(cfg, "full", 0, None).train.max_iters == 2 * ipe
    assert pretrain_config(cfg, "full@1ep", 0, None).train.max_iters == ipe  # the row's own dose
    ft_iters = load_config(CONFIGS / "finetune/demo.yaml").train.max_iters  # batch 4 as pre
    assert equal_compute_iters(cfg) == 2 * ipe + ft_iters


def test_bad_grid_keys_are_refused(tmp_path):
    cases = {
        "pretrain_epochs: -1\n": "must be >= 0",
        "row_seeds: {full: 0}\n": "row_seeds",
        "row_seeds: {hcl: 1}\n": "row_seeds",
        "proposals: {rows: [generic]}\n": "proposals.rows",
    }
    for extra, match in cases.items():
        with pytest.raises(ConfigError, match=match):
            load_ablate_config(_ablate_file(tmp_path, ["generic", "full"], extra))


# ---- the runner: proposals, row_seeds, doses in results.json ---------------------------------


@pytest.fixture()
def stages(monkeypatch):
    """Training stages replaced by file writers that record their configs."""
    log = []

    def pretrain(cfg):  # a PretrainJob: the config sections it reads, and its run folder
        work_dir = cfg.work_dir
        log.append(("pretrain", Path(work_dir).parts[-3], cfg))
        out = Path(work_dir) / "pretrained.safetensors"
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text("w")
        return out

    def finetune(cfg):  # a FinetuneJob
        work_dir = cfg.work_dir
        row, seed = Path(work_dir).parts[-3], int(Path(work_dir).parts[-2][4:])
        log.append(("finetune", row, seed, cfg.train.max_iters))
        ap = 0.2 + 0.01 * seed + (0.02 if row.startswith("full") else 0.0)
        (Path(work_dir) / "eval").mkdir(parents=True)
        metrics = {"AP": ap, "AP50": ap, "APr": ap / 2, "APc": ap, "APf": ap}
        (Path(work_dir) / "eval" / "metrics_bbox.json").write_text(json.dumps(metrics))

    def proposals(job):
        out = job.out
        log.append(("proposals", job.proposals.source, job.proposals.top_n))
        Path(out).parent.mkdir(parents=True, exist_ok=True)
        Path(out).write_text("[]")
        return Path(out)

    monkeypatch.setattr("drcl.pretrain.runner.run_pretrain", pretrain)
    monkeypatch.setattr("drcl.finetune.runner.run_finetune", finetune)
    monkeypatch.setattr("drcl.proposals.runner.run_proposals", proposals)
    return log


def test_grid_runs_doses_proposals_and_row_seeds(stages, tiny_demo, tmp_path):
    n = _num_images(tiny_demo)
    ipe = math.ceil(n / 4)
    rows = ["generic", "equal_compute", "full", "full_sup", "hcl_lcl", "full@3ep"]
    extra = (
        "pretrain_epochs: 1\nrow_seeds: {full@3ep: 1}\n"
        "proposals: {rows: [full, full_sup], overrides: [pretrain.proposals.top_n=40]}\n"
    )
    path = _ablate_file(tmp_path, rows, extra, _data(tiny_demo, batch=4))
    work = tmp_path / "w"
    run_ablation(path, work)
    assert stages[0] == ("proposals", "detector", 40)  # once, before any row
    pre = {(s[1], s[2].train.seed): s[2] for s in stages if s[0] == "pretrain"}
    assert sorted(pre) == sorted(
        [(r, s) for s in (0, 1) for r in ("full", "full_sup", "hcl_lcl")] + [("full@3ep", 0)]
    )
    det = str(work / "proposals" / "detector.json")
    for (row, _), cfg in pre.items():
        p = cfg.pretrain.proposals
        if row == "hcl_lcl":
            assert p.source == "gt" and p.file is None
        else:  # the rows listed, and full's dose full@3ep
            assert p.source == "detector" and p.file == det
        assert cfg.train.max_iters == (3 * ipe if row == "full@3ep" else ipe)
    ft = [s for s in stages if s[0] == "finetune"]
    assert [(r, s) for _, r, s, _ in ft] == [(r, 0) for r in rows] + [(r, 1) for r in rows[:-1]]
    ft_iters = load_config(CONFIGS / "finetune/demo.yaml").train.max_iters
    assert {r: i for _, r, _, i in ft}["equal_compute"] == ipe + ft_iters
    res = json.loads((work / "results.json").read_text())
    assert res["complete"]
    r = res["rows"]
    assert (r["full"]["pretrain_epochs"], r["full"]["pretrain_iters"]) == (1.0, ipe)
    assert (r["full@3ep"]["pretrain_epochs"], r["full@3ep"]["pretrain_iters"]) == (3.0, 3 * ipe)
    assert r["full@3ep"]["AP"]["values"] == [pytest.approx(22.0), None]
    assert r["full@3ep"]["diff_vs_baseline"]["AP"]["n"] == 1
    assert r["generic"]["pretrain_epochs"] == 0.0
    assert r["equal_compute"]["finetune_iters"] == ipe + ft_iters
    assert r["full_sup"]["components"][-1] == "sup"
    md = (work / "ablation.md").read_text()
    assert "LCL SUP" in md and "2DRCL epochs" in md
    assert "| full@3ep | generic | ✓ | ✓ | ✓ | ✓ | ✓ |  |  | 3 | 1 |" in md
    stages.clear()
    run_ablation(path, work)  # resumed: nothing runs again, the proposals are reused
    assert stages == []


# ---- the plan --------------------------------------------------------------------------------


def test_plan_of_the_shipped_v2_grid():
    plan = plan_grid(CONFIGS / "ablate/v2_grid.yaml", Costs(), train_images=540, val_images=100)
    cfg = load_ablate_config(CONFIGS / "ablate/v2_grid.yaml")
    ipe = math.ceil(540 / 8)
    rows = {r["row"]: r for r in plan["rows"]}
    assert plan["iters_per_epoch"] == ipe and list(rows) == list(cfg.rows)
    assert rows["full@12ep"]["pretrain_iters"] == 12 * ipe and rows["full@12ep"]["seeds"] == 1
    main = math.ceil(cfg.pretrain_epochs * ipe)
    assert rows["full"]["pretrain_iters"] == main and rows["full"]["seeds"] == 3
    f = rows["generic"]["finetune_iters"]
    assert rows["equal_compute"]["finetune_iters"] == main + f  # same batch 8 in both stages
    assert rows["generic"]["pretrain_s"] == 0.0
    total = sum(r["total_s"] for r in plan["rows"]) + sum(plan["once_s"].values())
    assert plan["total_s"] == pytest.approx(total)
    assert plan["total_s"] <= 3 * 3600  # the grid is designed for 3 CPU hours (estimate)
    # the seconds are linear in the per-image costs
    double = plan_grid(
        CONFIGS / "ablate/v2_grid.yaml",
        Costs(pretrain_s_per_image=0.34),
        train_images=540,
        val_images=100,
    )
    d = {r["row"]: r for r in double["rows"]}
    assert d["full"]["pretrain_s"] - rows["full"]["pretrain_s"] == pytest.approx(
        main * 8 * 0.17 * Costs().density
    )
