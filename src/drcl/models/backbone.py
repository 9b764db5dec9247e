"""ResNet-FPN backbone in torchvision's module and key layout.

The module built here is torchvision's own :class:`BackboneWithFPN` (``body`` =
``IntermediateLayerGetter`` over ``layer1..layer4``, ``fpn`` = ``FeaturePyramidNetwork`` with
``LastLevelMaxPool``), so its state dict loads unchanged into ``FasterRCNN(backbone=...)`` under
``backbone.``. Only the FPN width and the norm layer are free, so a slim demo model (e.g. 64 FPN
channels) keeps the same key names as ``fasterrcnn_resnet50_fpn``.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Callable

import torch
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint
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
    body = build_resnet_body(depth, norm, trainable_layers, weights)
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


# ------------------------------------------------------------------- activation checkpointing
class CheckpointedStage(nn.Sequential):
    """A ResNet stage (``layer1``..``layer4``) that can recompute its activations in backward.

    The same children as the ``nn.Sequential`` it replaces, so state-dict keys do not change
    (``layer1.0.conv1.weight``). With ``checkpointing = True``, in training with gradients on,
    the stage keeps only its input for backward and re-runs its forward there
    (``torch.utils.checkpoint``, non-reentrant): peak memory falls to the stage boundaries plus
    one stage's activations, for one more forward of the stage.

    Recomputation must give the same numbers and must not count a batch twice:

    - batch norm in training mode does not update its running statistics (or
      ``num_batches_tracked``) a second time: the recomputation updates scratch copies;
    - a BN layer is recomputed in the mode (train/eval, ``track_running_stats``) and, for eval
      mode, with the running statistics it had in the forward, even if a caller switched modes
      (e.g. a pass that must not move the running statistics) or a later pass updated the
      statistics before backward;
    - random ops (dropout) replay the forward's RNG state (``preserve_rng_state``, the default).
    """

    checkpointing: bool = False

    def forward(self, x: Tensor) -> Tensor:
        if not (self.checkpointing and self.training and torch.is_grad_enabled()):
            return super().forward(x)
        if not (x.requires_grad or any(p.requires_grad for p in self.parameters())):
            return super().forward(x)  # nothing to differentiate: nothing to save
        recompute = _ReplayBatchNorm(self)
        return checkpoint(
            super().forward,
            x,
            use_reentrant=False,
            context_fn=lambda: (contextlib.nullcontext(), recompute),
        )


class _ReplayBatchNorm:
    """Context of a recomputation: each BN as in its forward, updating only scratch buffers.

    Each BN layer gets its forward-time mode and ``track_running_stats`` flag and copies of its
    forward-time running statistics (and ``num_batches_tracked``): eval mode normalises with the
    same statistics as the forward, train mode normalises by the batch statistics as before, and
    its running-stat update lands in the copies, which are dropped. (Passing no running stats
    instead would change the tensors autograd saves, which checkpointing rejects.)
    Re-enterable, for ``retain_graph``.
    """

    _BUFFERS = ("running_mean", "running_var", "num_batches_tracked")

    def __init__(self, stage: nn.Module) -> None:
        # (bn, training, track_running_stats, buffers) as at forward time
        self.saved = [
            (m, m.training, m.track_running_stats, [_clone(getattr(m, b)) for b in self._BUFFERS])
            for m in stage.modules()
            if isinstance(m, nn.modules.batchnorm._BatchNorm)
        ]
        self.before: list[tuple] = []

    def __enter__(self) -> None:
        self.before = [
            (bn, bn.training, bn.track_running_stats, [getattr(bn, b) for b in self._BUFFERS])
            for bn, *_ in self.saved
        ]
        for bn, training, track, buffers in self.saved:
            # a caller may have run the forward with track_running_stats off (no stats passed
            # to F.batch_norm): the recomputation must save the same tensors
            bn.training, bn.track_running_stats = training, track
            for name, value in zip(self._BUFFERS, buffers, strict=True):
                setattr(bn, name, _clone(value))

    def __exit__(self, *exc: object) -> None:
        for bn, training, track, buffers in self.before:
            bn.training, bn.track_running_stats = training, track
            for name, value in zip(self._BUFFERS, buffers, strict=True):
                setattr(bn, name, value)


def _clone(t: Tensor | None) -> Tensor | None:
    return None if t is None else t.detach().clone()


def set_stage_checkpointing(body: nn.Module, enabled: bool) -> nn.Module:
    """Turn activation checkpointing of ``layer1``..``layer4`` of a ResNet body on or off.

    Swaps each stage for a :class:`CheckpointedStage` holding the same blocks (parameters are
    shared, keys unchanged); calling it again only flips the switch. Apply it to the online
    encoder only: a ``no_grad`` pass (the EMA target) never checkpoints anyway.

    Args:
        body: a torchvision ``ResNet`` or the ``IntermediateLayerGetter`` of a ``BackboneWithFPN``
            (``backbone.body``).
        enabled: the new state.

    Returns:
        ``body``, changed in place.
    """
    for name in ("layer1", "layer2", "layer3", "layer4"):
        stage = getattr(body, name, None)
        if stage is None:
            raise ValueError(f"set_stage_checkpointing: {type(body).__name__} has no {name}")
        if not isinstance(stage, CheckpointedStage):
            stage = CheckpointedStage(*stage)
            setattr(body, name, stage)
        stage.checkpointing = bool(enabled)
    return body


def build_resnet_body(
    depth: int, norm: str, trainable_layers: int, weights: str | None
) -> nn.Module:
    """The torchvision ResNet shared by every detector: checked arguments, local weights loaded,
    stages frozen (see :func:`build_resnet_fpn` for the arguments)."""
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
    return body
