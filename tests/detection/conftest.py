"""A tiny detector config: ResNet-18, 32 FPN channels, 64 px images, few proposals."""

from __future__ import annotations

import pytest

from drcl.config import Config


def make_tiny_config(arch: str = "faster_rcnn", loss: str = "ce") -> Config:
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
