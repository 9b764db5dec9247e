"""PretrainJob: the one reading of the root config for pre-training (2DRCL and the box stage).

Values on the shipped demo recipes are checked by hand against configs/pretrain/demo.yaml,
configs/pretrain/demo_box.yaml and their bases; the runner on a job gives the same losses as the
command line (below) and as a resumed run (test_loop.py).
"""

import json
from pathlib import Path

import pytest
from omegaconf import OmegaConf
from omegaconf.errors import ReadonlyConfigError

from drcl.config import ConfigError, load_config
from drcl.pretrain.job import PretrainJob
from drcl.utils.run_dir import read_metrics

CONFIGS = Path(__file__).resolve().parents[2] / "configs" / "pretrain"


def test_pretrain_job_of_the_demo_recipe():
    cfg = load_config(CONFIGS / "demo.yaml")
    job = PretrainJob.from_config(cfg, "runs/pre")
    # configs/_base_/demo_data.yaml and demo_model.yaml
    assert job.data.train_images == "work/demo/data/train"
    assert (job.data.min_size, job.model.depth, job.model.fpn_channels) == (128, 18, 64)
    # configs/pretrain/demo.yaml
    train = job.train
    assert (train.batch_size, train.lr, train.max_iters, train.warmup_iters) == (8, 0.02, 40, 20)
    assert (train.schedule, train.checkpoint_every) == ("cosine", 20)
    p = job.pretrain
    assert (p.proposals.source, p.views.size, p.lcl.boxes_per_image) == ("gt", 128, 8)
    assert (p.drb.threshold, p.sr.patch, p.sr.ratio) == (0.1, 32, 0.5)
    # the job's own fields and what the shared loop reads
    assert (job.work_dir, job.resume, job.stage) == (Path("runs/pre"), False, "image")
    loop = job.loop_job()
    assert loop.cost_info == {"stage": "pretrain", "init": None} and not loop.sync_bn
    assert loop.train is job.train and loop.config == OmegaConf.to_container(cfg, resolve=True)
    assert OmegaConf.create(job.config_yaml) == OmegaConf.create(loop.config)


def test_box_stage_job_reads_the_box_init_and_finetune_rpn():
    cfg = load_config(CONFIGS / "demo_box.yaml", ["model.norm=sync_bn"])
    job = PretrainJob.from_config(cfg, "runs/box", resume=True)
    assert (job.stage, job.resume) == ("box", True)
    assert job.pretrain.box.init == "work/demo/pretrain/pretrained.safetensors"
    assert job.pretrain.box.rois_per_image == 128
    loop = job.loop_job()
    assert loop.cost_info == {"stage": "box", "init": job.pretrain.box.init} and loop.sync_bn


def test_a_job_is_frozen_and_apart_from_its_config():
    cfg = load_config(CONFIGS / "demo.yaml")
    job = PretrainJob.from_config(cfg, "w")
    cfg.pretrain.drb.threshold = 0.5  # an orchestrator editing its config afterwards
    assert job.pretrain.drb.threshold == 0.1
    with pytest.raises(ReadonlyConfigError):
        job.train.lr = 0.5
    with pytest.raises(AttributeError):
        job.resume = True  # frozen dataclass


def test_unset_training_data_is_named():
    with pytest.raises(ConfigError, match=r"^data\.train_ann is required"):
        PretrainJob.from_config(load_config(None), "w")
    cfg = load_config(None, ["data.train_ann=t.json"])
    with pytest.raises(ConfigError, match=r"^data\.train_images is required"):
        PretrainJob.from_config(cfg, "w")


def test_runner_on_a_job_equals_the_command_line(tiny_overrides, tmp_path):
    from drcl.cli.main import main
    from drcl.pretrain.runner import run_pretrain

    over = [*tiny_overrides, "train.max_iters=2", "train.log_every=1", "data.num_workers=0"]
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text("train:\n  seed: 3\n")
    out = run_pretrain(PretrainJob.from_config(load_config(recipe, over), tmp_path / "job"))
    assert out == tmp_path / "job" / "pretrained.safetensors" and out.is_file()
    assert main(["pretrain", str(recipe), "--work-dir", str(tmp_path / "cli"), *over]) == 0
    job_rows = read_metrics(tmp_path / "job" / "metrics.jsonl")
    cli_rows = read_metrics(tmp_path / "cli" / "metrics.jsonl")
    assert [r["loss"] for r in job_rows] == [r["loss"] for r in cli_rows] and len(job_rows) == 2
    saved = (tmp_path / "job" / "config.yaml").read_text()
    assert saved == (tmp_path / "cli" / "config.yaml").read_text()
    assert json.loads((tmp_path / "job" / "cost.json").read_text())["stage"] == "pretrain"
