"""ResNet-FPN backbone in torchvision's module and key layout.

The module built here is torchvision's own :class:`BackboneWithFPN` (``body`` =
``IntermediateLayerGetter`` over ``layer1..layer4``, ``fpn`` = ``FeaturePyramidNetwork`` with
``LastLevelMaxPool``), so its state dict loads unchanged into ``FasterRCNN(backbone=...)`` under
``backbone.``. Only the FPN width and the norm layer are free, so a slim demo model (e.g. 64 FPN
channels) keeps the same key names as ``fasterrcnn_resnet50_fpn``.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable

from torch import nn
from torchvision.models import resnet
from torchvision.models.detection.backbone_utils import BackboneWithFPN
from torchvision.ops.feature_pyramid_network import LastLevelMaxPool
from torchvision.ops.misc import FrozenBatchNorm2d

from drcl.config.schema import ModelConfig
from drcl.utils.weights import load_into, read_state_dict

logger = logging.getLogger(__name__)

RESNETS: dict[int, Callable[..., resnet.ResNet]] = {
    18: resnet.resnet18,
    34: resnet.resnet34,
    50: resnet.resnet50,
    101: resnet.resnet101,
}
NORMS: dict[str, Callable[..., nn.Module]] = {
    "bn": nn.BatchNorm2d,
    "frozen_bn": FrozenBatchNorm2d,
    # Behaves as BatchNorm2d until a process group exists (then synchronises statistics).
    "sync_bn": nn.SyncBatchNorm,
}
# Key prefixes of other checkpoints that hold a torchvision ResNet (a detector's), stripped when
# loading; the DDP "module." prefix is read_state_dict's.
_LAYOUT_PREFIXES = ("backbone.body.", "body.")


def build_resnet_fpn(
    depth: int,
    fpn_channels: int = ModelConfig.fpn_channels,  # defaults live in the schema, once
    norm: str = ModelConfig.norm,
    trainable_layers: int = ModelConfig.trainable_layers,
    weights: str | os.PathLike | None = None,
) -> BackboneWithFPN:
    """Build a torchvision ResNet-FPN; outputs ``'0','1','2','3'`` (P2-P5) and ``'pool'`` (P6).

    Args:
        depth: ResNet depth, one of 18, 34, 50, 101.
        fpn_channels: output channels of every FPN level.
        norm: ``bn``, ``frozen_bn`` (torchvision's detection default) or ``sync_bn``.
        trainable_layers: how many stages, counted from ``layer4`` back to ``conv1``, are trained
            (0-5, torchvision's ``trainable_backbone_layers``; 5 = all, including ``bn1``).
        weights: optional local torchvision ResNet state dict (``.pth``/``.pt`` read with
            ``torch.load(weights_only=True)``, or ``.safetensors``). Never downloaded.

    Returns:
        ``BackboneWithFPN`` with ``out_channels == fpn_channels``. For an input ``(B, 3, H, W)``
        the levels have strides 4, 8, 16, 32, 64.
    """
    if depth not in RESNETS:
        raise ValueError(f"model.depth: got {depth}, allowed: {', '.join(map(str, RESNETS))}")
    if norm not in NORMS:
        raise ValueError(f"model.norm: got {norm!r}, allowed: {', '.join(NORMS)}")
    if not 0 <= trainable_layers <= 5:
        raise ValueError(f"model.trainable_layers: got {trainable_layers}, allowed: 0..5")
    body = RESNETS[depth](weights=None, norm_layer=NORMS[norm])
    if weights is not None:
        load_resnet_weights(body, weights)
    freeze_resnet_stages(body, trainable_layers)
    # in_channels of layer1..4: 64,128,256,512 (basic blocks) or x4 (bottlenecks).
    c2 = body.inplanes // 8
    return BackboneWithFPN(
        body,
        return_layers={f"layer{i}": str(i - 1) for i in range(1, 5)},
        in_channels_list=[c2, c2 * 2, c2 * 4, c2 * 8],
        out_channels=fpn_channels,
        extra_blocks=LastLevelMaxPool(),
    )


def freeze_resnet_stages(body: resnet.ResNet, trainable_layers: int) -> None:
    """Freeze all but the last ``trainable_layers`` stages, as torchvision's detection builders."""
    train = ["layer4", "layer3", "layer2", "layer1", "conv1"][:trainable_layers]
    if trainable_layers == 5:
        train.append("bn1")
    for name, param in body.named_parameters():
        if not any(name.startswith(stage) for stage in train):
            param.requires_grad_(False)


def load_resnet_weights(
    body: resnet.ResNet, path: str | os.PathLike
) -> tuple[list[str], list[str]]:
    """Load a torchvision ResNet state dict into ``body``; log and return missing/unexpected keys.

    Keys prefixed ``module.``, ``backbone.body.`` or ``body.`` (DDP or detector checkpoints) are
    accepted. ``fc.*`` (the ImageNet classifier) is dropped quietly: detection has no use for it.

    Raises:
        ValueError: no key of the file matches the ResNet (wrong file), or a shape differs
            (wrong depth), naming the file.
    """
    state = read_state_dict(path, role="model.weights")
    for prefix in _LAYOUT_PREFIXES:
        if any(k.startswith(prefix) for k in state):
            state = {k.removeprefix(prefix): v for k, v in state.items() if k.startswith(prefix)}
    state = {k: v for k, v in state.items() if not k.startswith("fc.")}
    if not set(state) & set(body.state_dict()):
        raise ValueError(f"{path}: no key matches a torchvision ResNet (e.g. 'conv1.weight')")
    report = load_into(body, state, strict=False, source=str(path), hint="wrong model.depth?")
    # fc (the ImageNet classifier) is not part of the FPN body.
    missing = [k for k in report.missing if not k.startswith("fc.")]
    logger.info(
        "loaded %s: %d tensors, missing %s, unexpected %s",
        path,
        len(report.loaded),
        missing or "none",
        report.unexpected or "none",
    )
    return missing, report.unexpected
