"""build_detector (Faster / Mask R-CNN, every loss) and load_pretrained's report and failures."""

from __future__ import annotations

import math

import pytest
import torch
from omegaconf import OmegaConf
from omegaconf.errors import ValidationError
from safetensors.torch import save_file
from torchvision.models.detection import FasterRCNN, MaskRCNN

from drcl.config.schema import ARCH_FAMILIES, LOSSES_BY_ARCH, Arch
from drcl.detection.model import load_pretrained
from drcl.detection.roi_heads import CosineFastRCNNPredictor, LongTailRoIHeads
from drcl.finetune.runner import detector_for
from drcl.losses.longtail import prior_bias

from .test_roi_heads import _images_targets

FREQS = torch.tensor([3.0, 40.0, 0.0, 250.0])


@pytest.mark.parametrize(
    ("arch", "loss"),
    [
        ("faster_rcnn", "ce"),
        ("mask_rcnn", "ce"),
        ("faster_rcnn", "bce"),
        ("faster_rcnn", "federated"),
        ("mask_rcnn", "seesaw"),
        ("faster_rcnn", "ecm"),
    ],
)
def test_train_losses_finite_and_eval_detections_capped(tiny_config, arch, loss):
    torch.manual_seed(0)
    model = detector_for(tiny_config(arch, loss), num_classes=4, class_freqs=FREQS)
    assert isinstance(model, MaskRCNN if arch == "mask_rcnn" else FasterRCNN)
    assert isinstance(model.roi_heads, LongTailRoIHeads) and model.roi_heads.cls_loss.name == loss
    images, targets = _images_targets()
    if arch == "faster_rcnn":
        targets = [{k: v for k, v in t.items() if k != "masks"} for t in targets]
    losses = model.train()(images, targets)
    expected = {"loss_classifier", "loss_box_reg", "loss_objectness", "loss_rpn_box_reg"}
    assert set(losses) == expected | ({"loss_mask"} if arch == "mask_rcnn" else set())
    total = sum(losses.values())
    assert torch.isfinite(total)
    total.backward()
    with torch.no_grad():
        outputs = model.eval()(images)
    for out, img in zip(outputs, images, strict=True):
        assert 0 < len(out["boxes"]) <= 300
        assert torch.all(out["scores"] > 1e-4) and out["labels"].min() >= 1
        assert out["labels"].max() <= 4
        assert out["boxes"][:, 2].max() <= img.shape[2] and out["boxes"][:, 3].max() <= img.shape[1]
        if arch == "mask_rcnn":
            assert out["masks"].shape == (len(out["boxes"]), 1, *img.shape[1:])


def test_config_reaches_the_detector(tiny_config):
    cfg = tiny_config("faster_rcnn", "bce")
    cfg.finetune.detections_per_img, cfg.finetune.nms_thresh = 11, 0.4
    cfg.finetune.score_thresh, cfg.finetune.box_batch_size_per_image = 0.02, 24
    model = detector_for(cfg, num_classes=4)
    heads = model.roi_heads
    assert (heads.detections_per_img, heads.nms_thresh, heads.score_thresh) == (11, 0.4, 0.02)
    assert heads.fg_bg_sampler.batch_size_per_image == 24
    assert model.transform.min_size == (64,) and model.transform.max_size == 64
    assert model.rpn._pre_nms_top_n == {"training": 100, "testing": 100}
    assert heads.box_head.fc6.in_features == 32 * 7 * 7 and heads.box_head.fc7.out_features == 64
    assert heads.box_predictor.cls_score.out_features == 5  # C + 1, background at 0
    # Sigmoid losses start every class at probability 0.01 (detectron2's prior init).
    assert torch.allclose(heads.box_predictor.cls_score.bias, torch.tensor(prior_bias(0.01)))
    assert prior_bias(0.01) == pytest.approx(-math.log(99))
    with torch.no_grad():
        outputs = model.eval()([torch.rand(3, 64, 64)])
    assert len(outputs[0]["boxes"]) <= 11


def test_lvis_test_settings_are_the_defaults(tiny_config):
    heads = detector_for(tiny_config(), num_classes=3).roi_heads
    assert (heads.score_thresh, heads.detections_per_img, heads.nms_thresh) == (1e-4, 300, 0.5)


def test_cosine_classifier_option(tiny_config):
    cfg = tiny_config()
    cfg.finetune.cosine_classifier, cfg.finetune.cosine_scale = True, 10.0
    model = detector_for(cfg, num_classes=4)
    assert isinstance(model.roi_heads.box_predictor, CosineFastRCNNPredictor)
    assert model.roi_heads.box_predictor.scale == 10.0


def test_bad_config_values(tiny_config):
    typed = OmegaConf.structured(tiny_config())
    allowed = "faster_rcnn, mask_rcnn, retinanet, fcos, atss"
    with pytest.raises(ValidationError, match=f"yolo.*{allowed}"):
        typed.finetune.arch = "yolo"  # an Enum field: refused when set
    cfg = tiny_config()
    cfg.finetune.arch = "retinanet"  # with the R-CNN loss 'ce' (load_config rejects it earlier)
    with pytest.raises(ValueError, match="'ce' for a one-stage detector, allowed: focal, ecm, efl"):
        detector_for(cfg, 4)
    with pytest.raises(ValueError, match="needs class_freqs"):
        detector_for(tiny_config(loss="federated"), 4)
    with pytest.raises(ValueError, match="num_classes must be >= 1"):
        detector_for(tiny_config(), 0)


# ---- load_pretrained ---------------------------------------------------------------------------


def _pretrained_file(model, path, extra=None):
    keep = ("backbone.body.", "backbone.fpn.", "roi_heads.box_head.")
    state = {k: v.clone() for k, v in model.state_dict().items() if k.startswith(keep)}
    state.update(extra or {})
    save_file(state, str(path))
    return state


def test_load_pretrained_reports_loaded_missing_unexpected(tiny_config, tmp_path, capsys):
    torch.manual_seed(0)
    source = detector_for(tiny_config(), num_classes=4)
    path = tmp_path / "pre.safetensors"
    saved = _pretrained_file(source, path, {"projector.0.weight": torch.ones(2, 2)})
    torch.manual_seed(1)
    target = detector_for(tiny_config(), num_classes=4)
    report = load_pretrained(target, path)
    assert set(report.loaded) == set(saved) - {"projector.0.weight"}
    assert report.unexpected == ["projector.0.weight"]
    own = target.state_dict()
    assert set(report.missing) == {k for k in own if not k.startswith(tuple(_prefixes()))}
    assert any(k.startswith("rpn.head.") for k in report.missing)
    assert "roi_heads.box_predictor.cls_score.weight" in report.missing
    for key in report.loaded:
        assert torch.equal(own[key], saved[key]), key
    table = capsys.readouterr().out
    assert "backbone.body" in table and "roi_heads.box_predictor" in table
    assert "unexpected (ignored): projector.0.weight" in table
    assert f"total{'':<23} {len(report.loaded):>7} {len(report.missing):>7} {1:>7}" in table


def _prefixes():
    return ("backbone.body.", "backbone.fpn.", "roi_heads.box_head.")


def test_load_pretrained_wrong_file(tiny_config, tmp_path):
    model = detector_for(tiny_config(), num_classes=4)
    path = tmp_path / "resnet_classifier.safetensors"
    save_file(
        {"conv1.weight": torch.zeros(64, 3, 7, 7), "fc.weight": torch.zeros(10, 512)}, str(path)
    )
    with pytest.raises(ValueError, match=r"no 'backbone.body.\*' key matches.*conv1.weight"):
        load_pretrained(model, path, verbose=False)
    with pytest.raises(FileNotFoundError, match="missing.safetensors"):
        load_pretrained(model, tmp_path / "missing.safetensors")


def test_load_pretrained_shape_mismatch_names_key_and_shapes(tiny_config, tmp_path):
    cfg = tiny_config()
    cfg.model.fpn_channels = 16
    path = tmp_path / "fpn16.safetensors"
    _pretrained_file(detector_for(cfg, num_classes=4), path)
    with pytest.raises(
        ValueError,
        match=r"key 'backbone.fpn.inner_blocks.0.0.weight' has shape "
        r"\(16, 64, 1, 1\) in the file but \(32, 64, 1, 1\) in the model",
    ):
        load_pretrained(detector_for(tiny_config(), num_classes=4), path, verbose=False)


def test_load_pretrained_from_torch_checkpoint_with_model_key(tiny_config, tmp_path):
    torch.manual_seed(0)
    source = detector_for(tiny_config(), num_classes=4)
    path = tmp_path / "ckpt.pt"
    torch.save({"model": source.state_dict(), "iteration": 3}, path)
    target = detector_for(tiny_config(), num_classes=4)
    report = load_pretrained(target, path, verbose=False)
    assert report.missing == [] and report.unexpected == []
    for key, value in target.state_dict().items():
        assert torch.equal(value, source.state_dict()[key])


@pytest.mark.parametrize("arch", list(ARCH_FAMILIES))
def test_every_arch_builds_the_family_the_table_names(tiny_config, arch):
    """``config.schema.ARCH_FAMILIES`` is the one table: the enum, the losses a config may
    name, the detector class built and the masks all follow it."""
    family = ARCH_FAMILIES[arch]
    assert Arch(arch).value == arch and LOSSES_BY_ARCH[arch] == family.losses
    model = detector_for(tiny_config(arch, family.losses[0]), 4, class_freqs=FREQS)
    assert isinstance(model, MaskRCNN) == family.masks
    assert isinstance(model, FasterRCNN) == (not family.one_stage)  # MaskRCNN is a FasterRCNN
