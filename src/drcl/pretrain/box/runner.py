"""``drcl pretrain`` with ``pretrain.stage: box``: the model of the box-domain stage after 2DRCL.

The data path is the image stage's (DRB sampler, proposals, two views with box identity), the
loop is the shared one of :mod:`drcl.pretrain.loop` (logging, checkpoints, resume,
``cost.json``); :func:`drcl.pretrain.runner.run_pretrain` runs it with the model built here:
only the model differs
(:class:`~drcl.models.box_domain.BoxDomainModel`). The output, ``pretrained.safetensors``, holds
backbone, FPN, RPN and box head in torchvision's layout, so ``drcl finetune --init`` loads them.
"""

from __future__ import annotations

from typing import Protocol

from torchvision.models.detection import FasterRCNN
from torchvision.models.detection.faster_rcnn import TwoMLPHead

from drcl.config.schema import DataConfig, FinetuneConfig, ModelConfig, PretrainConfig
from drcl.models.backbone import build_resnet_fpn
from drcl.models.box_domain import BoxDomainModel, BoxEmbedPredictor

BOX_POOL_SIZE = 7  # torchvision's MultiScaleRoIAlign output for boxes


class BoxStageSpec(Protocol):
    """What builds the box stage's model: ``model.*``, ``pretrain.box.*``, fine-tuning's RPN and
    RoI settings and the image size (a :class:`~drcl.pretrain.job.PretrainJob`, or a loaded
    config in tests)."""

    @property
    def data(self) -> DataConfig: ...
    @property
    def model(self) -> ModelConfig: ...
    @property
    def pretrain(self) -> PretrainConfig: ...
    @property
    def finetune(self) -> FinetuneConfig: ...


def build_box_detector(spec: BoxStageSpec) -> FasterRCNN:
    """Faster R-CNN on ``model.*``'s ResNet-FPN with a :class:`BoxEmbedPredictor`; the RPN and
    RoI settings are fine-tuning's (``finetune.rpn_*``), so the exported RPN is the one that
    fine-tuning will run."""
    from drcl.detection.model import detector_kwargs

    m = spec.model
    backbone = build_resnet_fpn(m.depth, m.fpn_channels, m.norm, m.trainable_layers, m.weights)
    box_head = TwoMLPHead(m.fpn_channels * BOX_POOL_SIZE**2, m.box_head_dim)
    predictor = BoxEmbedPredictor(m.box_head_dim, m.box_head_dim, spec.pretrain.box.embed_dim)
    return FasterRCNN(
        backbone,
        None,
        box_head=box_head,
        box_predictor=predictor,
        **detector_kwargs(spec.finetune, spec.data.min_size, spec.data.max_size),
    )


def build_box_model(spec: BoxStageSpec) -> BoxDomainModel:
    """Build, and load ``pretrain.box.init`` (a backbone or detector checkpoint) if set."""
    online = build_box_detector(spec)
    if spec.pretrain.box.init:
        from drcl.detection.model import load_pretrained

        load_pretrained(online, spec.pretrain.box.init)
    return BoxDomainModel(online, spec.pretrain.box)
