"""ResNet-FPN: torchvision key layout, norms, freezing, local weight files."""

import pytest
import torch
from safetensors.torch import save_file
from torchvision.models import resnet18
from torchvision.models.detection import FasterRCNN, fasterrcnn_resnet50_fpn
from torchvision.models.detection.backbone_utils import resnet_fpn_backbone
from torchvision.ops.misc import FrozenBatchNorm2d

from drcl.models.backbone import build_resnet_fpn, load_resnet_weights


def test_keys_equal_torchvision_fasterrcnn_resnet50_fpn():
    # Without weights torchvision builds BatchNorm2d; with weights, FrozenBatchNorm2d (same keys
    # minus num_batches_tracked, which FrozenBatchNorm2d drops when loading).
    tv = fasterrcnn_resnet50_fpn(weights=None, weights_backbone=None).backbone.state_dict()
    ours = build_resnet_fpn(50, 256, "bn").state_dict()
    assert set(ours) == set(tv)
    assert all(ours[k].shape == v.shape for k, v in tv.items())
    frozen = build_resnet_fpn(50, 256, "frozen_bn").state_dict()
    assert set(frozen) == {k for k in tv if not k.endswith("num_batches_tracked")}


@pytest.mark.parametrize("fpn_channels", [256, 32])
def test_resnet18_keys_match_torchvision_and_load_under_backbone(fpn_channels):
    ours = build_resnet_fpn(18, fpn_channels, "bn")
    tv = resnet_fpn_backbone(
        backbone_name="resnet18", weights=None, norm_layer=torch.nn.BatchNorm2d
    )
    assert set(ours.state_dict()) == set(tv.state_dict())
    detector = FasterRCNN(build_resnet_fpn(18, fpn_channels, "frozen_bn"), num_classes=3)
    state = {f"backbone.{k}": v for k, v in ours.state_dict().items()}
    result = detector.load_state_dict(state, strict=False)
    assert result.unexpected_keys == []
    assert not [k for k in result.missing_keys if k.startswith("backbone.")]


def test_outputs_levels_and_strides():
    out = build_resnet_fpn(18, 16).eval()(torch.zeros(1, 3, 64, 64))
    assert list(out) == ["0", "1", "2", "3", "pool"]
    assert [v.shape[-1] for v in out.values()] == [16, 8, 4, 2, 1]
    assert all(v.shape[1] == 16 for v in out.values())


def test_norm_choices_and_freezing_match_torchvision():
    assert isinstance(build_resnet_fpn(18, 8, "frozen_bn").body.bn1, FrozenBatchNorm2d)
    assert type(build_resnet_fpn(18, 8, "bn").body.bn1) is torch.nn.BatchNorm2d
    assert isinstance(build_resnet_fpn(18, 8, "sync_bn").body.bn1, torch.nn.SyncBatchNorm)
    for layers in (0, 3, 5):
        ours = build_resnet_fpn(18, 256, "bn", trainable_layers=layers)
        tv = resnet_fpn_backbone(
            backbone_name="resnet18",
            weights=None,
            norm_layer=torch.nn.BatchNorm2d,
            trainable_layers=layers,
        )
        flags = {n: p.requires_grad for n, p in tv.named_parameters()}
        assert {n: p.requires_grad for n, p in ours.named_parameters()} == flags


def test_bad_choices_are_named():
    with pytest.raises(ValueError, match="model.depth"):
        build_resnet_fpn(20)
    with pytest.raises(ValueError, match="model.norm"):
        build_resnet_fpn(18, norm="gn")
    with pytest.raises(ValueError, match="model.trainable_layers"):
        build_resnet_fpn(18, trainable_layers=6)


@pytest.mark.parametrize("suffix", [".pth", ".safetensors"])
def test_local_weights_are_loaded(tmp_path, suffix):
    torch.manual_seed(0)
    source = resnet18().state_dict()
    path = tmp_path / f"r18{suffix}"
    if suffix == ".pth":
        torch.save(source, path)
    else:
        save_file({k: v.contiguous() for k, v in source.items()}, str(path))
    model = build_resnet_fpn(18, 8, "frozen_bn", weights=path)
    body = model.body.state_dict()
    for key, value in body.items():
        torch.testing.assert_close(value, source[key], msg=key)


def test_weights_report_and_errors(tmp_path):
    state = resnet18().state_dict()
    partial = {f"backbone.body.{k}": v for k, v in state.items() if not k.startswith("layer4")}
    partial["backbone.body.extra.weight"] = torch.zeros(1)
    torch.save(partial, tmp_path / "det.pth")
    body = resnet18(norm_layer=FrozenBatchNorm2d)
    missing, unexpected = load_resnet_weights(body, tmp_path / "det.pth")
    assert missing and all(k.startswith("layer4") for k in missing)
    assert unexpected == ["extra.weight"]
    with pytest.raises(FileNotFoundError, match="model.weights"):
        build_resnet_fpn(18, weights=tmp_path / "nope.pth")
    torch.save({"foo": torch.zeros(1)}, tmp_path / "wrong.pth")
    with pytest.raises(ValueError, match="wrong.pth.*no key"):
        build_resnet_fpn(18, weights=tmp_path / "wrong.pth")
    torch.save(state, tmp_path / "r18.pth")
    with pytest.raises(ValueError, match="r18.pth.*shape.*model.depth"):
        build_resnet_fpn(50, weights=tmp_path / "r18.pth")
