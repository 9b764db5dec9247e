"""FinetuneJob / EvaluateJob: the one reading of the root config for fine-tuning and evaluation.

Values on the shipped demo recipe are checked by hand against configs/finetune/demo.yaml and its
bases; a job run by the runner gives the same numbers as the command line
(``test_finetune_cli.py``, sharing its training run).
"""

from pathlib import Path

import pytest
from omegaconf import OmegaConf
from omegaconf.errors import ReadonlyConfigError

from drcl.config import ConfigError, load_config
from drcl.finetune.job import EvaluateJob, FinetuneJob, iou_types_of

DEMO = Path(__file__).resolve().parents[2] / "configs" / "finetune" / "demo.yaml"


def test_finetune_job_of_the_demo_recipe():
    cfg = load_config(DEMO)
    job = FinetuneJob.from_config(cfg, "runs/ft")
    # configs/_base_/demo_data.yaml
    assert job.data.train_ann == "work/demo/data/annotations/train.json"
    assert job.data.val_images == "work/demo/data/val"
    assert (job.data.num_workers, job.data.min_size, job.data.max_size) == (1, 128, 128)
    # configs/_base_/demo_model.yaml
    assert (job.model.depth, job.model.fpn_channels, job.model.box_head_dim) == (18, 64, 256)
    assert job.model.norm == "bn"
    # configs/finetune/demo.yaml
    train = job.train
    assert (train.batch_size, train.lr, train.max_iters, train.warmup_iters) == (8, 0.02, 100, 20)
    assert (train.grad_clip, train.checkpoint_every, train.schedule) == (10.0, 50, "step")
    ft = job.finetune
    assert (ft.arch, ft.loss, ft.rfs, ft.rfs_threshold, ft.aligndet_rule) == (
        "faster_rcnn", "ce", True, 0.1, False
    )  # fmt: skip
    assert (ft.rpn_batch_size_per_image, ft.box_batch_size_per_image) == (64, 128)
    assert ft.eval_batch_size == 16 and ft.score_thresh == 1e-4  # schema default, LVIS protocol
    # the job's own fields
    assert job.work_dir == Path("runs/ft") and job.init is None and not job.resume
    assert (job.stage, job.evaluate, job.device, job.iou_types) == (
        "finetune",
        True,
        "auto",
        ("bbox",),
    )
    # config.yaml of the run: the whole resolved root config
    assert OmegaConf.to_container(OmegaConf.create(job.config_yaml)) == OmegaConf.to_container(
        cfg, resolve=True
    )


def test_init_comes_from_the_argument_else_from_the_config():
    cfg = load_config(DEMO, ["finetune.init=cfg.safetensors"])
    assert FinetuneJob.from_config(cfg, "w").init == "cfg.safetensors"
    assert FinetuneJob.from_config(cfg, "w", init="arg.safetensors").init == "arg.safetensors"


def test_a_job_is_frozen_and_apart_from_its_config():
    cfg = load_config(DEMO)
    job = FinetuneJob.from_config(cfg, "w")
    cfg.train.lr = 0.5  # an orchestrator editing its config afterwards changes no job
    assert job.train.lr == 0.02
    with pytest.raises(ReadonlyConfigError):
        job.train.lr = 0.5
    with pytest.raises(AttributeError):
        job.init = "x"  # frozen dataclass


def test_unset_data_paths_are_named():
    cfg = load_config(None, ["data.train_ann=t.json", "data.train_images=t"])
    with pytest.raises(ConfigError, match=r"^data\.val_ann is required"):
        FinetuneJob.from_config(cfg, "w")
    assert FinetuneJob.from_config(cfg, "w", evaluate=False).data.train_ann == "t.json"
    with pytest.raises(ConfigError, match=r"^data\.train_ann is required"):
        FinetuneJob.from_config(load_config(None), "w", evaluate=False)
    with pytest.raises(ConfigError, match="stage"):
        FinetuneJob.from_config(cfg, "w", evaluate=False, stage="")


def test_evaluate_job_of_the_demo_recipe_and_its_bad_values():
    cfg = load_config(DEMO)
    job = EvaluateJob.from_config(cfg, "run/model_final.safetensors", "run/eval-val")
    assert (job.checkpoint, job.out_dir) == (
        Path("run/model_final.safetensors"), Path("run/eval-val")
    )  # fmt: skip
    assert (job.iou_types, job.device, job.finetune.eval_batch_size) == (("bbox",), "auto", 16)
    assert job.data.val_ann == "work/demo/data/annotations/val.json"
    masks = load_config(DEMO, ["finetune.arch=mask_rcnn"])
    assert EvaluateJob.from_config(masks, "m", "o").iou_types == ("bbox", "segm")
    assert iou_types_of("mask_rcnn") == ("bbox", "segm")
    with pytest.raises(ValueError, match="iou_type 'segm' needs finetune.arch=mask_rcnn"):
        EvaluateJob.from_config(cfg, "m", "o", ["segm"])
    with pytest.raises(ValueError, match="iou_type 'keypoints'"):
        EvaluateJob.from_config(masks, "m", "o", ["keypoints"])
    with pytest.raises(ConfigError, match=r"^data\.val_ann is required"):
        EvaluateJob.from_config(load_config(None), "m", "o")


# The runner on a job against the command line: test_finetune_cli.py (one training run shared).
