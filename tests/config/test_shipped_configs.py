"""Every shipped recipe loads onto the typed schema (a typo in a YAML fails here)."""

from pathlib import Path

import pytest
from omegaconf import OmegaConf

from drcl.ablation.runner import load_ablate_config
from drcl.config import load_config

ROOT = Path(__file__).resolve().parents[2] / "configs"
RECIPES = sorted(
    p for p in ROOT.rglob("*.yaml") if "_base_" not in p.parts and "ablate" not in p.parts
)


@pytest.mark.parametrize("path", RECIPES, ids=lambda p: str(p.relative_to(ROOT)))
def test_recipe_loads(path):
    cfg = load_config(path)
    assert cfg.model.depth in (18, 34, 50, 101)
    for key in ("train_ann", "train_images", "val_ann", "val_images"):
        assert not OmegaConf.is_missing(cfg.data, key), f"{path.name} does not name data.{key}"


def test_paper_scale_recipes_follow_the_paper():
    pre = load_config(ROOT / "pretrain" / "lvis_v1_r50_1x.yaml")
    assert (pre.train.batch_size, pre.train.lr, pre.train.epochs) == (16, 0.02, 12)
    assert pre.pretrain.lcl.boxes_per_image == 8 and pre.pretrain.proposals.source == "detector"
    ft = load_config(ROOT / "finetune" / "lvis_v1" / "mask_rcnn_r101_2x_2drcl_ecm.yaml")
    assert (ft.model.depth, ft.train.epochs, ft.finetune.arch, ft.finetune.loss) == (
        101,
        24,
        "mask_rcnn",
        "ecm",
    )
    assert ft.finetune.init and ft.model.weights is None
    assert (ft.finetune.score_thresh, ft.finetune.detections_per_img) == (1e-4, 300)
    assert len(list((ROOT / "finetune" / "lvis_v1").glob("*_rcnn_*.yaml"))) == 49  # 48 + 2drcl_box


@pytest.mark.parametrize("loss", ["focal", "ecm", "efl"])
@pytest.mark.parametrize("init", ["random", "imagenet", "2drcl"])
def test_atss_recipes_are_the_appendix_table(loss, init):
    cfg = load_config(ROOT / "finetune" / "lvis_v1" / f"atss_r50_2x_{loss}_{init}.yaml")
    ft = cfg.finetune
    assert (cfg.model.depth, cfg.train.epochs, ft.arch, ft.loss) == (50, 24, "atss", loss)
    # mmdetection atss_r50_fpn_1x: lr 0.01 for batch 16, focal 0.25 / 2, GIoU 2, top-k 9
    assert (cfg.train.lr, cfg.train.batch_size) == (0.01, 16)
    assert (ft.focal_alpha, ft.focal_gamma, ft.giou_weight, ft.atss_topk) == (0.25, 2.0, 2.0, 9)
    assert (ft.score_thresh, ft.detections_per_img) == (1e-4, 300)
    assert bool(ft.init) == (init == "2drcl") and bool(cfg.model.weights) == (init == "imagenet")
    assert cfg.model.norm == ("sync_bn" if init == "random" else "frozen_bn")


def test_box_stage_recipes():
    box = load_config(ROOT / "pretrain" / "lvis_v1_r50_box.yaml")
    assert box.pretrain.stage == "box" and box.pretrain.box.init
    assert (box.pretrain.box.momentum, box.pretrain.box.temperature) == (0.996, 0.5)
    assert (box.train.batch_size, box.train.lr, box.train.epochs) == (16, 0.02, 12)
    demo = load_config(ROOT / "pretrain" / "demo_box.yaml")
    assert demo.pretrain.stage == "box"
    ft = load_config(ROOT / "finetune" / "demo_box.yaml")
    plain = load_config(ROOT / "finetune" / "demo.yaml")
    assert ft.finetune.init == "work/demo/box/pretrained.safetensors"
    ft.finetune.init = plain.finetune.init
    assert ft == plain  # same fine-tuning recipe, only the init differs


@pytest.mark.parametrize("path", sorted((ROOT / "ablate").glob("*.yaml")))
def test_ablation_configs_load(path):
    cfg = load_ablate_config(path)
    assert Path(cfg.pretrain_config).is_file() and Path(cfg.finetune_config).is_file()
    assert Path(cfg.box_config).is_file()
