"""Typed configuration schema (OmegaConf structured configs).

Every key has a default here; YAML files under ``configs/`` only override. One root ``Config``
holds all stages, so one file can describe data, pre-training and fine-tuning of an experiment.
Choices given as strings are validated in :func:`validate_choices` against the tables in
``CHOICES``, so a typo fails at load time with the allowed values.
"""

from __future__ import annotations

from dataclasses import dataclass, field

CHOICES: dict[str, tuple[str, ...]] = {
    "data.on_error": ("raise", "skip"),
    "model.norm": ("bn", "frozen_bn", "sync_bn"),
    "train.optimizer": ("sgd", "adamw"),
    "train.schedule": ("step", "cosine"),
    "train.amp": ("none", "bf16", "fp16"),
    "train.device": ("auto", "cpu", "cuda"),
    "pretrain.proposals.source": ("gt", "file", "detector"),
    "pretrain.hcl.loss": ("byol", "infonce"),
    "pretrain.drb.schedule": ("linear", "cosine", "step", "none"),
    "pretrain.ar.target": ("pixel", "object"),
    "pretrain.ar.input": ("masked", "view"),
    "finetune.arch": ("faster_rcnn", "mask_rcnn"),
    "finetune.loss": ("ce", "bce", "federated", "seesaw", "ecm"),
}


@dataclass
class DataConfig:
    """Where the annotations and images are, and how they are read."""

    train_ann: str = "work/demo/data/annotations/train.json"
    train_images: str = "work/demo/data/train"
    val_ann: str = "work/demo/data/annotations/val.json"
    val_images: str = "work/demo/data/val"
    on_error: str = "raise"  # a broken image/record: raise (naming it) or skip and count
    num_workers: int = 0
    min_size: int = 128  # detector resize (GeneralizedRCNNTransform)
    max_size: int = 128


@dataclass
class ModelConfig:
    """ResNet-FPN shared by pre-training and fine-tuning (torchvision key layout)."""

    depth: int = 18  # 18 | 34 | 50 | 101
    fpn_channels: int = 256
    box_head_dim: int = 1024  # TwoMLPHead representation size
    norm: str = "frozen_bn"
    trainable_layers: int = 5
    weights: str | None = (
        None  # local torchvision ResNet state dict (.pth/.safetensors); never downloaded
    )


@dataclass
class TrainConfig:
    """Optimisation and the engine (shared by pretrain and finetune)."""

    batch_size: int = 16  # global batch
    lr: float = 0.02  # for batch 16; scaled linearly with batch_size when scale_lr
    scale_lr: bool = True
    optimizer: str = "sgd"
    momentum: float = 0.9
    weight_decay: float = 1e-4
    schedule: str = "step"
    epochs: int = 12  # "1x" = 12 epochs, x0.1 at 8 and 11
    max_iters: int = 0  # > 0 overrides epochs
    steps: list[float] = field(default_factory=lambda: [8 / 12, 11 / 12])  # fractions of training
    gamma: float = 0.1
    warmup_iters: int = 500
    warmup_factor: float = 0.001
    grad_clip: float = 0.0  # max L2 norm, 0 = off
    accumulate: int = 1
    amp: str = "none"
    device: str = "auto"
    seed: int = 0
    deterministic: bool = False
    log_every: int = 10
    checkpoint_every: int = 0  # iterations, 0 = at the end of each epoch only
    keep_checkpoints: int = 2
    nonfinite: str = "raise"  # raise | skip


@dataclass
class ProposalConfig:
    source: str = "gt"
    file: str | None = None  # COCO results json for source=file
    top_n: int = 50
    nms: float = 0.5
    score_thresh: float = 0.05
    min_size: float = 4.0
    label_iou: float = 0.5  # a proposal takes the class of a GT box it overlaps this much
    detector_iters: int = 200


@dataclass
class ViewConfig:
    """MoCo v2 / BYOL augmentation; the two views are asymmetric (blur / solarise)."""

    size: int = 128
    crop_scale: list[float] = field(default_factory=lambda: [0.5, 1.0])
    flip: float = 0.5
    jitter: list[float] = field(default_factory=lambda: [0.4, 0.4, 0.2, 0.1])
    jitter_p: float = 0.8
    grayscale_p: float = 0.2
    blur_p: list[float] = field(default_factory=lambda: [1.0, 0.1])
    solarize_p: list[float] = field(default_factory=lambda: [0.0, 0.2])
    min_box_size: float = 4.0  # px in the view
    min_box_visible: float = 0.3  # kept fraction of the box area after cropping


@dataclass
class HCLConfig:
    weight: float = 1.0
    loss: str = "byol"
    temperature: float = 0.2  # infonce only
    queue_size: int = 0  # infonce only: MoCo queue of target projections as extra negatives
    proj_dim: int = 256
    hidden_dim: int = 256


@dataclass
class LCLConfig:
    weight: float = 1.0
    temperature: float = 0.5
    boxes_per_image: int = 8
    supervised: bool = False  # boxes of the same known class are positives too
    proj_dim: int = 256
    hidden_dim: int = 256


@dataclass
class DRBConfig:
    enabled: bool = True
    threshold: float = 1e-3  # RFS t
    schedule: str = "cosine"  # alpha(p) from alpha_start to alpha_end
    alpha_start: float = 0.0
    alpha_end: float = 1.0
    step_at: float = 0.5  # for schedule=step


@dataclass
class ARConfig:
    weight: float = 1.0
    target: str = "pixel"
    input: str = "masked"  # features decoded: of the masked view 1 (inpainting) or of view 1
    masked_only: bool = False  # pixel target: L1 on masked pixels only (MAE-style)
    channels: int = 32


@dataclass
class SRConfig:
    weight: float = 1.0
    patch: int = 32
    ratio: float = 0.5
    # true: the online encoder sees [masked view 1; view 2] once, and HCL/LCL/AR/SR all read that
    # pass (2B online images instead of 3B: ~25-30% less time and memory); false: a separate
    # online pass on the masked copy, HCL/LCL on the unmasked views (docs/method.md)
    shared_pass: bool = False


@dataclass
class EMAConfig:
    momentum: float = 0.99
    momentum_end: float = 1.0


@dataclass
class PretrainConfig:
    proposals: ProposalConfig = field(default_factory=ProposalConfig)
    proposals_file: str | None = None  # precomputed proposals json (drcl proposals --out)
    views: ViewConfig = field(default_factory=ViewConfig)
    hcl: HCLConfig = field(default_factory=HCLConfig)
    lcl: LCLConfig = field(default_factory=LCLConfig)
    drb: DRBConfig = field(default_factory=DRBConfig)
    ar: ARConfig = field(default_factory=ARConfig)
    sr: SRConfig = field(default_factory=SRConfig)
    ema: EMAConfig = field(default_factory=EMAConfig)


@dataclass
class FinetuneConfig:
    arch: str = "faster_rcnn"
    loss: str = "ce"
    cosine_classifier: bool = False
    cosine_scale: float = 20.0
    rfs: bool = False
    rfs_threshold: float = 1e-3
    init: str | None = None  # pre-trained safetensors
    pretrained_lr_mult: float = 1.5  # AlignDet: lr x1.5 and wd /2 from detection pre-training
    pretrained_wd_div: float = 2.0
    rpn_batch_size_per_image: int = 256
    box_batch_size_per_image: int = 512
    rpn_pre_nms_top_n_train: int = 2000
    rpn_post_nms_top_n_train: int = 2000
    rpn_pre_nms_top_n_test: int = 1000
    rpn_post_nms_top_n_test: int = 1000
    score_thresh: float = 1e-4  # LVIS test protocol
    detections_per_img: int = 300
    nms_thresh: float = 0.5
    federated_num_classes: int = 50
    federated_power: float = 0.5  # negatives drawn with P(c) ∝ image_count_c ** power
    seesaw_p: float = 0.8
    seesaw_q: float = 2.0
    ecm_fg_bg_ratio: float = 6.3313  # ECM background count = ratio * total fg count (official)
    eval_batch_size: int = 8


@dataclass
class Config:
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    pretrain: PretrainConfig = field(default_factory=PretrainConfig)
    finetune: FinetuneConfig = field(default_factory=FinetuneConfig)
