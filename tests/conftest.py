"""Shared fixtures: one small generated demo dataset per test session."""

from __future__ import annotations

import pytest
import torch

# Tiny models: one thread avoids oversubscription on the 2-core CI machine (and with xdist).
torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def drcl_logging():
    """The CLI's logging set-up for every test: INFO to stdout, warnings to stderr (capsys)."""
    from drcl.cli.main import setup_logging

    setup_logging()


@pytest.fixture(scope="session")
def tiny_demo(tmp_path_factory):
    """A reduced embedded demo dataset (~80 train / ~30 val images of 128 px)."""
    from drcl.data.demo import make_demo_dataset

    out = tmp_path_factory.mktemp("tiny_demo")
    return make_demo_dataset(out, seed=0, size="small", num_train=80, num_val=30)


@pytest.fixture()
def tiny_overrides(tiny_demo):
    """Config overrides pointing at ``tiny_demo`` with a tiny, fast model."""
    return [
        f"data.train_ann={tiny_demo['train_ann']}",
        f"data.train_images={tiny_demo['train_images']}",
        f"data.val_ann={tiny_demo['val_ann']}",
        f"data.val_images={tiny_demo['val_images']}",
        "model.depth=18",
        "model.fpn_channels=16",
        "model.box_head_dim=32",
        "model.norm=bn",
        "pretrain.views.size=64",
        "pretrain.sr.patch=16",
        "pretrain.ar.channels=8",
        "train.batch_size=4",
        "train.warmup_iters=2",
        "train.log_every=1",
        "train.deterministic=true",
    ]


@pytest.fixture()
def fast_overrides():
    """Two iterations and small RPN/RoI samples: end-to-end runs in seconds."""
    return [
        "train.max_iters=2",
        "train.checkpoint_every=2",
        "finetune.eval_batch_size=8",
        "finetune.rpn_batch_size_per_image=32",
        "finetune.box_batch_size_per_image=32",
    ]


def make_tiny_config(arch: str = "faster_rcnn", loss: str = "ce"):
    """A tiny detector config: ResNet-18, 32 FPN channels, 64 px images, few proposals."""
    from drcl.config import Config

    cfg = Config()
    cfg.model.depth, cfg.model.fpn_channels, cfg.model.box_head_dim = 18, 32, 64
    cfg.data.min_size = cfg.data.max_size = 64
    ft = cfg.finetune
    ft.arch, ft.loss = arch, loss
    ft.rpn_pre_nms_top_n_train = ft.rpn_pre_nms_top_n_test = 100
    ft.rpn_post_nms_top_n_train = ft.rpn_post_nms_top_n_test = 50
    ft.rpn_batch_size_per_image, ft.box_batch_size_per_image = 32, 32
    cfg.train.device = "cpu"
    return cfg


@pytest.fixture
def tiny_config():
    return make_tiny_config
