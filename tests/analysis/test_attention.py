"""Grad-CAM: analytic map of a linear model; shape, range, fallback on a tiny detector."""

import numpy as np
import pytest
import torch
from torch import nn
from torchvision.models import resnet18
from torchvision.models.detection import FasterRCNN
from torchvision.models.detection.backbone_utils import BackboneWithFPN

from drcl.analysis.attention import gradcam, plot_attention


class LinearDetector(nn.Module):
    """score = sum(A * M), A = 1x1 conv of the image: dscore/dA = M exactly."""

    def __init__(self, weight: torch.Tensor, mask: torch.Tensor, label: int = 2):
        super().__init__()
        self.backbone = nn.Conv2d(3, weight.shape[0], 1, bias=False)
        self.backbone.weight.data.copy_(weight[:, :, None, None])
        self.register_buffer("mask", mask)
        self.label = label

    def forward(self, images):
        a = self.backbone(images[0][None])
        score = (a[0] * self.mask).sum()
        return [
            {
                "boxes": torch.zeros(1, 4),
                "labels": torch.tensor([self.label]),
                "scores": score[None],
            }
        ]


def analytic_cam(weight, mask, image):
    a = np.einsum("kc,chw->khw", weight.numpy(), image.numpy())  # the 1x1 conv
    alpha = mask.numpy().mean(axis=(1, 2))  # spatially averaged gradient per channel
    cam = np.maximum(np.einsum("k,khw->hw", alpha, a), 0)
    return cam / cam.max()


def test_linear_model_gives_the_analytic_map():
    g = torch.Generator().manual_seed(0)
    weight, mask = torch.randn(4, 3, generator=g), torch.randn(4, 12, 16, generator=g)
    image = torch.rand(3, 12, 16, generator=g) * 2 - 1  # signed, so the ReLU has work to do
    model = LinearDetector(weight, mask)
    got = gradcam(model, image, target_class=2, layer="backbone")
    want = analytic_cam(weight, mask, image)
    assert got.shape == (12, 16) and got.dtype == np.float32
    assert want.max() == 1.0 and (want == 0).any()  # the ReLU clips something: a real test
    np.testing.assert_allclose(got, want, atol=1e-5)


def test_no_positive_evidence_gives_zeros_and_missing_class_fails():
    weight, image = torch.ones(2, 3), torch.rand(3, 8, 8)
    model = LinearDetector(weight, -torch.ones(2, 8, 8))
    assert (gradcam(model, image, 2, layer="backbone") == 0).all()
    with pytest.raises(ValueError, match="no detection of class 5"):
        gradcam(model, image, 5, layer="backbone")


def tiny_detector(score_thresh: float) -> FasterRCNN:
    torch.manual_seed(0)
    body = resnet18(weights=None)
    layers = {f"layer{i}": str(i - 1) for i in range(1, 5)}
    backbone = BackboneWithFPN(body, layers, [64, 128, 256, 512], out_channels=32)
    return FasterRCNN(
        backbone, num_classes=5, min_size=64, max_size=96, box_score_thresh=score_thresh,
        rpn_pre_nms_top_n_test=50, rpn_post_nms_top_n_test=20,
        representation_size=64,
    )  # fmt: skip


@pytest.fixture(scope="module")
def detector():
    return tiny_detector(0.0)


@pytest.fixture(scope="module")
def image():
    return torch.rand(3, 60, 80, generator=torch.Generator().manual_seed(1))


@pytest.mark.parametrize("layer", ["backbone.fpn", "backbone.fpn:0", "backbone.body.layer4"])
def test_tiny_detector_map_shape_and_range(detector, image, layer):
    detector.eval()
    with torch.no_grad():
        label = int(detector([image])[0]["labels"][0])
    detector.train()  # the mode is restored after the call
    cam = gradcam(detector, image, label, layer=layer)
    assert detector.training
    assert cam.shape == (60, 80) and np.isfinite(cam).all()
    assert cam.min() >= 0 and cam.max() == pytest.approx(1.0)
    np.testing.assert_array_equal(cam, gradcam(detector, image, label, layer=layer))


def test_fallback_to_class_logits_when_nothing_is_detected(image):
    model = tiny_detector(1.0)  # no score passes: no detections at all
    model.eval()
    with torch.no_grad():
        assert len(model([image])[0]["labels"]) == 0
    cam = gradcam(model, image, 3)
    assert cam.shape == (60, 80) and 0 <= cam.min() and cam.max() <= 1 and cam.max() > 0
    with pytest.raises(ValueError, match="out of range"):
        gradcam(model, image, 9)


def test_bad_layer_and_image(detector, image):
    with pytest.raises(ValueError, match="layer 'backbone.nope' not found"):
        gradcam(detector, image, 1, layer="backbone.nope")
    with pytest.raises(ValueError, match="no level '7'; levels: 0, 1, 2, 3, pool"):
        gradcam(detector, image, 1, layer="backbone.fpn:7")
    with pytest.raises(ValueError, match=r"image must be \(3, H, W\)"):
        gradcam(detector, image[0], 1)


def test_plot_attention(tmp_path, image):
    maps = {"baseline": [np.zeros((60, 80))], "2drcl": [np.ones((60, 80))]}
    out = plot_attention([image], maps, tmp_path / "att.png", row_labels=["img 7"])
    assert out.read_bytes()[:4] == b"\x89PNG"
    with pytest.raises(ValueError, match="'bad': map 0 is"):
        plot_attention([image], {"bad": [np.zeros((5, 5))]}, tmp_path / "x.png")
    with pytest.raises(ValueError, match="1 maps for 2 images"):
        plot_attention([image, image], {"a": [np.zeros((60, 80))]}, tmp_path / "x.png")
