"""Weight export: key maps against detectron2 / mmdetection layouts, round trips, torchvision load.

The expected key lists below are written from the libraries' sources (see docs/export.md):
detectron2 ``modeling/backbone/resnet.py`` (BasicStem.conv1, stages ``res2..res5``, BasicBlock
conv1-2 / BottleneckBlock conv1-3 with ``.norm``, ``shortcut`` only when channels change),
``layers/batch_norm.py`` (FrozenBatchNorm2d buffers), ``modeling/backbone/fpn.py``
(``fpn_lateral{stage}``, ``fpn_output{stage}``, stage = log2(stride)), ``roi_heads/box_head.py``
(``fc1``, ``fc2``); mmdetection ``backbones/resnet.py`` (conv1, bn1, layerN, bnK, downsample.0/1),
``necks/fpn.py`` (``lateral_convs.i.conv``, ``fpn_convs.i.conv``), ``bbox_heads/
convfc_bbox_head.py`` (``shared_fcs.0/1``).
"""

from __future__ import annotations

import argparse
import zipfile

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file
from torchvision.models.detection import FasterRCNN
from torchvision.models.detection.backbone_utils import resnet_fpn_backbone
from torchvision.models.detection.faster_rcnn import TwoMLPHead

from drcl.config import Config
from drcl.export.cli import cli_export
from drcl.export.convert import export_state, import_state
from drcl.finetune.runner import detector_for
from drcl.models.backbone import build_resnet_fpn

NORM4 = ["weight", "bias", "running_mean", "running_var"]
NORM5 = NORM4 + ["num_batches_tracked"]


def _state(depth: int, norm: str, fpn: int = 16, head: int = 32) -> dict[str, torch.Tensor]:
    torch.manual_seed(depth)
    backbone = build_resnet_fpn(depth, fpn, norm)
    box_head = TwoMLPHead(fpn * 49, head)
    state = {f"backbone.{k}": v for k, v in backbone.state_dict().items()}
    state.update({f"roi_heads.box_head.{k}": v for k, v in box_head.state_dict().items()})
    return state


def _conv_norm(prefix: str, names: list[str], norm: list[str]) -> list[str]:
    keys = []
    for name in names:
        keys.append(f"{prefix}{name}.weight")
        keys += [f"{prefix}{name}.norm.{t}" for t in norm]
    return keys


# ---- detectron2 ---------------------------------------------------------------------------------

D2_FPN_HEAD = (
    [f"backbone.fpn_lateral{s}.{t}" for s in range(2, 6) for t in ("weight", "bias")]
    + [f"backbone.fpn_output{s}.{t}" for s in range(2, 6) for t in ("weight", "bias")]
    + [f"roi_heads.box_head.fc{i}.{t}" for i in (1, 2) for t in ("weight", "bias")]
)
D2_STEM = _conv_norm("backbone.bottom_up.stem.", ["conv1"], NORM4)
D2_R18_RES2_0 = _conv_norm("backbone.bottom_up.res2.0.", ["conv1", "conv2"], NORM4)
D2_R18_RES3_0 = _conv_norm("backbone.bottom_up.res3.0.", ["shortcut", "conv1", "conv2"], NORM4)
D2_R50_RES2_0 = _conv_norm(
    "backbone.bottom_up.res2.0.", ["shortcut", "conv1", "conv2", "conv3"], NORM4
)


def _select(keys, *prefixes):
    return sorted(k for k in keys if k.startswith(prefixes))


def test_detectron2_keys_r18_match_the_detectron2_layout():
    out = export_state(_state(18, "bn"), "detectron2")
    keys = set(out.state)
    assert _select(keys, "backbone.bottom_up.stem.") == sorted(D2_STEM)
    assert _select(keys, "backbone.bottom_up.res2.0.") == sorted(D2_R18_RES2_0)
    assert _select(keys, "backbone.bottom_up.res3.0.") == sorted(D2_R18_RES3_0)
    assert _select(keys, "backbone.fpn_", "roi_heads.") == sorted(D2_FPN_HEAD)
    # ResNet-18: stages res2..res5 with 2 blocks each, nothing else.
    stages = {".".join(k.split(".")[2:4]) for k in keys if ".res" in k}
    assert stages == {f"res{s}.{b}" for s in range(2, 6) for b in (0, 1)}
    assert out.unmapped == []
    assert out.dropped and all(k.endswith("num_batches_tracked") for k in out.dropped)


def test_detectron2_keys_r50_bottleneck():
    out = export_state(_state(50, "frozen_bn"), "detectron2")
    keys = set(out.state)
    assert _select(keys, "backbone.bottom_up.res2.0.") == sorted(D2_R50_RES2_0)
    assert "backbone.bottom_up.res4.5.conv3.norm.running_var" in keys
    assert "backbone.bottom_up.res4.6.conv1.weight" not in keys  # R50 has 6 blocks in res4
    assert out.state["backbone.fpn_lateral5.weight"].shape == (16, 2048, 1, 1)
    assert out.dropped == [] and out.unmapped == []


@pytest.mark.parametrize(("depth", "norm"), [(18, "frozen_bn"), (50, "bn")])
def test_detectron2_round_trip(depth, norm):
    state = _state(depth, norm)
    out = export_state(state, "detectron2")
    back = import_state(out.state, "detectron2")
    assert back.unmapped == [] and back.dropped == []
    kept = {k: v for k, v in state.items() if not k.endswith("num_batches_tracked")}
    assert back.state.keys() == kept.keys()
    for key, value in kept.items():
        assert torch.equal(back.state[key], value), key


# ---- mmdetection --------------------------------------------------------------------------------

MM_R18 = (
    ["backbone.conv1.weight"]
    + [f"backbone.bn1.{t}" for t in NORM5]
    + [f"backbone.layer1.0.conv{i}.weight" for i in (1, 2)]
    + [f"backbone.layer1.0.bn{i}.{t}" for i in (1, 2) for t in NORM5]
    + ["backbone.layer2.0.downsample.0.weight"]
    + [f"backbone.layer2.0.downsample.1.{t}" for t in NORM5]
)
MM_NECK_HEAD = (
    [f"neck.lateral_convs.{i}.conv.{t}" for i in range(4) for t in ("weight", "bias")]
    + [f"neck.fpn_convs.{i}.conv.{t}" for i in range(4) for t in ("weight", "bias")]
    + [f"roi_head.bbox_head.shared_fcs.{i}.{t}" for i in (0, 1) for t in ("weight", "bias")]
)


def test_mmdet_keys_match_the_mmdetection_layout():
    out = export_state(_state(18, "bn"), "mmdet")
    keys = set(out.state)
    assert set(MM_R18) <= keys
    assert _select(keys, "backbone.conv1", "backbone.bn1", "backbone.layer1.0.") == sorted(
        k for k in MM_R18 if not k.startswith("backbone.layer2")
    )
    assert _select(keys, "neck.", "roi_head.") == sorted(MM_NECK_HEAD)
    assert not any(k.startswith("backbone.body") for k in keys)
    assert out.unmapped == [] and out.dropped == []
    r50 = export_state(_state(50, "frozen_bn"), "mmdet").state
    assert {f"backbone.layer1.0.conv{i}.weight" for i in (1, 2, 3)} <= set(r50)
    assert "backbone.layer1.0.downsample.0.weight" in r50


@pytest.mark.parametrize(("depth", "norm"), [(18, "bn"), (50, "frozen_bn")])
def test_mmdet_round_trip(depth, norm):
    state = _state(depth, norm)
    back = import_state(export_state(state, "mmdet").state, "mmdet")
    assert back.unmapped == [] and back.state.keys() == state.keys()
    for key, value in state.items():
        assert torch.equal(back.state[key], value), key


def test_unknown_keys_are_reported_not_dropped_silently():
    state = _state(18, "frozen_bn")
    state["rpn.head.conv.0.0.weight"] = torch.zeros(1)
    state["roi_heads.cls_loss.cum_counts"] = torch.zeros(3)
    for target in ("detectron2", "mmdet"):
        out = export_state(state, target)
        assert out.unmapped == ["rpn.head.conv.0.0.weight", "roi_heads.cls_loss.cum_counts"]
    tv = export_state(state, "torchvision")
    assert "rpn.head.conv.0.0.weight" in tv.state
    assert tv.unmapped == ["roi_heads.cls_loss.cum_counts"]
    with pytest.raises(ValueError, match="allowed: torchvision, detectron2, mmdet"):
        export_state(state, "onnx")
    with pytest.raises(ValueError, match="allowed: detectron2, mmdet"):
        import_state(state, "torchvision")


# ---- files and the CLI --------------------------------------------------------------------------


def _args(checkpoint, to, out):
    return argparse.Namespace(checkpoint=str(checkpoint), to=to, out=str(out))


def _torchvision_sized_config(depth: int = 18) -> Config:
    # torchvision's resnet_fpn_backbone: 256 FPN channels, FrozenBN; TwoMLPHead 1024.
    cfg = Config()
    cfg.model.depth, cfg.model.fpn_channels, cfg.model.box_head_dim = depth, 256, 1024
    cfg.model.norm = "frozen_bn"
    return cfg


def test_exported_torchvision_weights_load_into_torchvision_builders(tmp_path, capsys):
    torch.manual_seed(0)
    ours = detector_for(_torchvision_sized_config(), num_classes=4)
    ckpt = tmp_path / "ckpt.pt"
    torch.save({"model": ours.state_dict(), "optimizer": {}}, ckpt)
    out = tmp_path / "tv.safetensors"
    assert cli_export(_args(ckpt, "torchvision", out)) == 0
    assert "exported" in capsys.readouterr().out
    exported = load_file(str(out))
    backbone = resnet_fpn_backbone(backbone_name="resnet18", weights=None, trainable_layers=5)
    reference = FasterRCNN(backbone, num_classes=5)
    assert exported.keys() == reference.state_dict().keys()
    reference.load_state_dict(exported, strict=True)
    for key, value in ours.state_dict().items():
        assert torch.equal(reference.state_dict()[key], value), key


def test_pretrained_subset_loads_into_torchvision_with_only_heads_missing(tmp_path):
    torch.manual_seed(0)
    ours = detector_for(_torchvision_sized_config(), num_classes=4)
    keep = ("backbone.", "roi_heads.box_head.")
    src = tmp_path / "pretrained.safetensors"
    save_file({k: v for k, v in ours.state_dict().items() if k.startswith(keep)}, str(src))
    out = tmp_path / "tv.safetensors"
    cli_export(_args(src, "torchvision", out))
    backbone = resnet_fpn_backbone(backbone_name="resnet18", weights=None, trainable_layers=5)
    result = FasterRCNN(backbone, num_classes=5).load_state_dict(load_file(str(out)), strict=False)
    assert result.unexpected_keys == []
    assert {k.split(".")[0] + "." + k.split(".")[1] for k in result.missing_keys} == {
        "rpn.head",
        "roi_heads.box_predictor",
    }


def test_pth_outputs_are_what_detectron2_and_mmdet_read(tmp_path, capsys):
    src = tmp_path / "pre.safetensors"
    state = _state(18, "bn")
    state["rpn.head.cls_logits.weight"] = torch.zeros(3, 16, 1, 1)
    save_file(state, str(src))
    cli_export(_args(src, "detectron2", tmp_path / "d2.pth"))
    printed = capsys.readouterr().out
    assert "not exported (1 keys without a detectron2 rule): rpn.head.cls_logits.weight" in printed
    assert "dropped" in printed
    d2 = torch.load(tmp_path / "d2.pth", weights_only=True)
    assert d2["__author__"] == "drcl" and "backbone.bottom_up.stem.conv1.weight" in d2["model"]
    cli_export(_args(src, "mmdet", tmp_path / "mm.pth"))
    mm = torch.load(tmp_path / "mm.pth", weights_only=True)
    assert "neck.lateral_convs.0.conv.weight" in mm["state_dict"]
    cli_export(_args(src, "detectron2", tmp_path / "d2.safetensors"))
    assert load_file(str(tmp_path / "d2.safetensors")).keys() == d2["model"].keys()


def test_cli_rejects_files_without_our_layout(tmp_path):
    src = tmp_path / "classifier.safetensors"
    save_file({"conv1.weight": torch.zeros(2, 3, 1, 1)}, str(src))
    with pytest.raises(ValueError, match=r"no 'backbone.body.\*' key.*conv1.weight"):
        cli_export(_args(src, "detectron2", tmp_path / "x.pth"))
    assert not (tmp_path / "x.pth").exists()
    text = tmp_path / "notes.pt"
    text.write_text("not weights")
    with pytest.raises(ValueError, match=r"notes.pt: .*not a checkpoint") as err:
        cli_export(_args(text, "mmdet", tmp_path / "y.pth"))
    assert "weights_only" not in str(err.value) and "\n" not in str(err.value)
    ddp = tmp_path / "ddp.pt"
    torch.save({"model": {f"module.{k}": v for k, v in _state(18, "bn").items()}}, ddp)
    assert cli_export(_args(ddp, "mmdet", tmp_path / "mm.safetensors")) == 0
    assert "backbone.conv1.weight" in load_file(str(tmp_path / "mm.safetensors"))


@pytest.mark.parametrize("suffix", [".pth", ".pt", ".PT"])
@pytest.mark.parametrize("target", ["torchvision", "detectron2", "mmdet"])
def test_torch_suffixes_give_torch_files(tmp_path, suffix, target):
    src = tmp_path / "pre.safetensors"
    save_file(_state(18, "bn"), str(src))
    out = tmp_path / f"w{suffix}"
    assert cli_export(_args(src, target, out)) == 0
    assert zipfile.is_zipfile(out)  # torch.save's format, never safetensors under a torch suffix
    obj = torch.load(out, weights_only=True)
    state = {"detectron2": lambda o: o["model"], "mmdet": lambda o: o["state_dict"]}.get(
        target, lambda o: o
    )(obj)
    assert state and all(isinstance(v, torch.Tensor) for v in state.values())


def test_pkl_is_detectron2s_plain_pickle(tmp_path):
    import pickle

    src = tmp_path / "pre.safetensors"
    save_file(_state(18, "bn"), str(src))
    out = tmp_path / "d2.pkl"
    assert cli_export(_args(src, "detectron2", out)) == 0
    with open(out, "rb") as fh:  # what DetectionCheckpointer does for .pkl
        obj = pickle.load(fh, encoding="latin1")
    assert obj["__author__"] == "drcl"
    pth = tmp_path / "d2.pth"
    cli_export(_args(src, "detectron2", pth))
    ref = torch.load(pth, weights_only=True)["model"]
    assert obj["model"].keys() == ref.keys()
    for k, v in ref.items():
        np.testing.assert_array_equal(obj["model"][k], v.numpy())
    with pytest.raises(ValueError, match=r"\.pkl is detectron2's format; for mmdet use \.pth"):
        cli_export(_args(src, "mmdet", tmp_path / "mm.pkl"))


@pytest.mark.parametrize("name", ["w.bin", "w", "w.safetensor", "w.ckpt"])
def test_other_suffixes_are_refused_before_reading(tmp_path, name):
    missing = tmp_path / "not_there.safetensors"  # the suffix is checked before the input
    with pytest.raises(ValueError, match="unknown suffix"):
        cli_export(_args(missing, "detectron2", tmp_path / name))
    assert not (tmp_path / name).exists()
