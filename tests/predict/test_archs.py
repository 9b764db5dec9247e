"""`drcl predict` runs every detector family: Mask R-CNN (masks as RLE, drawn) and a one-stage
detector (ATSS), from a run folder written by hand (untrained weights: the plumbing is tested,
not the accuracy)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from drcl.cli.main import main
from drcl.config import Config, save_config
from drcl.data.categories import CategoryTable
from drcl.data.dataset import segmentation_to_mask
from drcl.finetune.runner import detector_for, save_detector


def make_tiny_config(arch: str, loss: str) -> Config:
    """ResNet-18, 16 FPN channels, 64 px, few proposals (as tests/detection's tiny config)."""
    cfg = Config()
    cfg.model.depth, cfg.model.fpn_channels, cfg.model.box_head_dim = 18, 16, 32
    cfg.data.min_size = cfg.data.max_size = 64
    ft = cfg.finetune
    ft.arch, ft.loss = arch, loss
    ft.rpn_pre_nms_top_n_test, ft.rpn_post_nms_top_n_test = 100, 50
    cfg.train.device = "cpu"
    return cfg


def _run_folder(tmp_path: Path, tiny_demo, arch: str, loss: str) -> Path:
    cfg = make_tiny_config(arch, loss)
    cfg.data.train_ann, cfg.data.val_ann = str(tiny_demo["train_ann"]), str(tiny_demo["val_ann"])
    cfg.data.train_images, cfg.data.val_images = "unused", "unused"
    table = CategoryTable.from_coco(tiny_demo["train_ann"])
    torch.manual_seed(0)
    model = detector_for(cfg, table.num_classes, torch.ones(table.num_classes))
    run = tmp_path / arch
    run.mkdir()
    save_config(cfg, run / "config.yaml")
    save_detector(model, run / "model_final.safetensors", table)
    return run


@pytest.mark.parametrize("arch, loss", [("mask_rcnn", "ce"), ("atss", "focal")])
def test_predict_every_detector_family(arch, loss, tiny_demo, tmp_path):
    run = _run_folder(tmp_path, tiny_demo, arch, loss)
    images = tmp_path / "im"
    images.mkdir()
    for src in sorted(Path(tiny_demo["val_images"]).iterdir())[:2]:
        shutil.copyfile(src, images / src.name)
    out, draw = tmp_path / "p.json", tmp_path / "drawn"
    argv = ["predict", str(run), "--images", str(images), "--out", str(out), "--draw", str(draw)]
    assert main([*argv, "--draw-score-thr", "0", "--max-dets", "20"]) == 0
    records = json.loads(out.read_text())
    ids = {c["id"] for c in json.loads(Path(tiny_demo["train_ann"]).read_text())["categories"]}
    assert records and {r["image_id"] for r in records} <= {1, 2}
    assert {r["category_id"] for r in records} <= ids
    assert max(sum(r["image_id"] == i for r in records) for i in (1, 2)) <= 20  # --max-dets
    assert len(list(draw.iterdir())) == 2
    if arch == "mask_rcnn":  # masks: compressed RLE of the image's size
        assert all("segmentation" in r for r in records)
        first = sorted(images.iterdir())[0]
        h, w = np.asarray(Image.open(first)).shape[:2]
        assert all(r["segmentation"]["size"] == [h, w] for r in records if r["image_id"] == 1)
        mask = segmentation_to_mask(records[0]["segmentation"], h, w)
        assert mask.any()  # a mask drawn from the detection, not an empty placeholder
    else:
        assert not any("segmentation" in r for r in records)
