"""Typed configuration schema (OmegaConf structured configs).

Every key has its one default here (constructors below the runners take these values as
arguments); YAML files under ``configs/`` only override. The data paths have no default
(``???``): every recipe names its data. One root ``Config`` holds all stages, so one file can
describe data, pre-training and fine-tuning of an experiment; only the stage runners read it.

Choices are :class:`~enum.StrEnum` fields, validated by OmegaConf when the config is loaded, so
a typo fails at load time with the allowed values. A member equals its string
(``cfg.train.optimizer == "sgd"``) and is written as that string to YAML and json.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum

# "raise" is a Python keyword, so these two use the functional form (members by name: ["raise"]).
OnError = StrEnum("OnError", {"raise": "raise", "skip": "skip"})
NonFinite = StrEnum("NonFinite", {"raise": "raise", "skip": "skip"})


class Norm(StrEnum):
    bn = "bn"
    frozen_bn = "frozen_bn"
    sync_bn = "sync_bn"


class Optimizer(StrEnum):
    sgd = "sgd"
    adamw = "adamw"


class LrSchedule(StrEnum):
    step = "step"
    cosine = "cosine"


class Amp(StrEnum):
    none = "none"
    bf16 = "bf16"
    fp16 = "fp16"


class Device(StrEnum):
    auto = "auto"
    cpu = "cpu"
    cuda = "cuda"


class PretrainStage(StrEnum):
    image = "image"  # 2DRCL: the backbone (and FPN + box head through LCL)
    box = "box"  # the box-domain stage (AlignDet): FPN, RPN, RoI head on a frozen backbone


class ProposalSource(StrEnum):
    gt = "gt"
    file = "file"
    detector = "detector"


class HCLLoss(StrEnum):
    byol = "byol"
    infonce = "infonce"


class AlphaSchedule(StrEnum):
    linear = "linear"
    cosine = "cosine"
    step = "step"
    none = "none"


class AlphaUpdate(StrEnum):
    # iteration: each batch is drawn with its own iteration's alpha (sampling/progressive.py);
    # epoch: the epoch-list sampler, alpha fixed per sampler epoch
    iteration = "iteration"
    epoch = "epoch"


class InstanceFactor(StrEnum):
    instance_rfs = "instance_rfs"  # max(1, sqrt(t / f_inst))
    irfs = "irfs"  # max(1, sqrt(t / sqrt(f_img * f_inst))), Yaman et al. 2023


class ARTarget(StrEnum):
    pixel = "pixel"
    object = "object"


class ARInput(StrEnum):
    masked = "masked"
    view = "view"


@dataclass(frozen=True)
class ArchFamily:
    """What a ``finetune.arch`` is: the one table every module asks (:data:`ARCH_FAMILIES`).

    Attributes:
        one_stage: a dense detector (RetinaNet / FCOS / ATSS on P3-P7), else torchvision's
            two-stage Faster / Mask R-CNN on P2-P6.
        masks: predicts instance masks (evaluated as ``segm`` too; data loads masks).
        losses: the ``finetune.loss`` values it accepts (checked when the config loads).
    """

    one_stage: bool
    masks: bool
    losses: tuple[str, ...]


_RCNN_LOSSES = ("ce", "bce", "federated", "seesaw", "ecm")
_ONE_STAGE_LOSSES = ("focal", "ecm", "efl")
ARCH_FAMILIES: dict[str, ArchFamily] = {
    "faster_rcnn": ArchFamily(one_stage=False, masks=False, losses=_RCNN_LOSSES),
    "mask_rcnn": ArchFamily(one_stage=False, masks=True, losses=_RCNN_LOSSES),
    "retinanet": ArchFamily(one_stage=True, masks=False, losses=_ONE_STAGE_LOSSES),
    "fcos": ArchFamily(one_stage=True, masks=False, losses=_ONE_STAGE_LOSSES),
    "atss": ArchFamily(one_stage=True, masks=False, losses=_ONE_STAGE_LOSSES),
}
# finetune.loss values each family of detectors accepts (checked together with finetune.arch).
LOSSES_BY_ARCH: dict[str, tuple[str, ...]] = {a: f.losses for a, f in ARCH_FAMILIES.items()}
ONE_STAGE_ARCHS = tuple(a for a, f in ARCH_FAMILIES.items() if f.one_stage)
# finetune.arch: one member per family of the table above.
Arch = StrEnum("Arch", [(name, name) for name in ARCH_FAMILIES], module=__name__)


class ClsLoss(StrEnum):
    ce = "ce"
    bce = "bce"
    federated = "federated"
    seesaw = "seesaw"
    ecm = "ecm"
    focal = "focal"  # one-stage detectors (sigmoid, no background channel)
    efl = "efl"


class InitKeepClasses(StrEnum):
    # class-specific layers of a fine-tuning init whose classes differ from the training file's
    skip = "skip"  # left at their initialisation, with a note (detectron2 / mmdetection)
    match_by_name = "match_by_name"  # rows of classes present in both (by name) are copied


@dataclass
class GroupsConfig:
    """Frequency-group thresholds of the LVIS rule (training images per class), used where the
    json has no ``frequency`` field. LVIS: rare <= 10, common <= 100, frequent above; a small
    dataset may scale them (``drcl data stats`` suggests values)."""

    rare_max: int = 10
    common_max: int = 100


@dataclass
class DataConfig:
    """Where the annotations and images are, and how they are read."""

    train_ann: str = "???"  # required: each recipe names its data (configs/_base_/*_data.yaml)
    train_images: str = "???"
    val_ann: str = "???"
    val_images: str = "???"
    # a broken image/record: raise (naming it) or skip and count
    on_error: OnError = OnError["raise"]
    # DataLoader workers per process; -1 = chosen for the machine (drcl.engine.runtime: on a CPU
    # with <= 4 cores 0, the data loaded between steps; on CUDA cores - 1, at most 8)
    num_workers: int = 0
    min_size: int = 128  # detector resize (GeneralizedRCNNTransform)
    max_size: int = 128
    groups: GroupsConfig = field(default_factory=GroupsConfig)
    # evaluation: a val/test category id whose name differs from the training file's is refused
    # unless true (categories are always matched by id, never by position)
    allow_category_mismatch: bool = False


@dataclass
class ModelConfig:
    """ResNet-FPN shared by pre-training and fine-tuning (torchvision key layout)."""

    depth: int = 18  # 18 | 34 | 50 | 101
    fpn_channels: int = 256
    box_head_dim: int = 1024  # TwoMLPHead representation size
    norm: Norm = Norm.frozen_bn
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
    optimizer: Optimizer = Optimizer.sgd
    momentum: float = 0.9
    weight_decay: float = 1e-4
    schedule: LrSchedule = LrSchedule.step
    epochs: int = 12  # "1x" = 12 epochs, x0.1 at 8 and 11
    max_iters: int = 0  # > 0 overrides epochs
    steps: list[float] = field(default_factory=lambda: [8 / 12, 11 / 12])  # fractions of training
    gamma: float = 0.1
    warmup_iters: int = 500
    warmup_factor: float = 0.001
    grad_clip: float = 0.0  # max L2 norm, 0 = off
    accumulate: int = 1
    amp: Amp = Amp.none
    device: Device = Device.auto
    seed: int = 0
    deterministic: bool = False
    log_every: int = 10
    checkpoint_every: int = 0  # iterations, 0 = at the end of each epoch only
    keep_checkpoints: int = 2
    nonfinite: NonFinite = NonFinite["raise"]  # a NaN/inf loss: raise, or skip the step
    # throughput (docs/performance.md; drcl.engine.runtime). threads: torch intra-op threads,
    # 0 = torch's default (all cores), -1 = the cores not taken by data.num_workers
    threads: int = 0
    channels_last: bool = False  # NHWC weights and images (same math, fp32 rounding differs)
    compile: bool = False  # torch.compile the ResNet bodies and FPNs (same caveat; compiles once)


@dataclass
class ProposalConfig:
    source: ProposalSource = ProposalSource.gt
    # COCO results json: source=file reads it; source=detector: the output of `drcl proposals`
    file: str | None = None
    top_n: int = 50
    nms: float = 0.5
    score_thresh: float = 0.05
    min_size: float = 4.0
    label_iou: float = 0.5  # a proposal takes the class of a GT box it overlaps this much
    detector_iters: int = 200  # class-agnostic detector budget (demo scale) when epochs = 0
    # > 0: train the class-agnostic detector this many epochs of the training set instead
    # (iterations = epochs * ceil(num_images / batch)); paper-scale recipes use 12, a 1x schedule
    detector_epochs: int = 0


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
    loss: HCLLoss = HCLLoss.byol
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
    schedule: AlphaSchedule = AlphaSchedule.cosine  # alpha(p) from alpha_start to alpha_end
    alpha_start: float = 0.0
    alpha_end: float = 1.0
    step_at: float = 0.5  # for schedule=step
    # iteration: every batch is drawn with the alpha of its own optimizer iteration (i.i.d. draws,
    # sampling/progressive.py); epoch: the old epoch-list sampler, alpha fixed per sampler epoch
    alpha_update: AlphaUpdate = AlphaUpdate.iteration
    # instance-level class factor r_c^inst: instance_rfs = max(1, sqrt(t / f_inst)) (RFS on
    # instance fractions); irfs = max(1, sqrt(t / sqrt(f_img * f_inst))) (Yaman et al. 2023)
    instance_factor: InstanceFactor = InstanceFactor.instance_rfs


@dataclass
class ARConfig:
    weight: float = 1.0
    target: ARTarget = ARTarget.pixel
    # features decoded: of the masked view 1 (inpainting) or of view 1
    input: ARInput = ARInput.masked
    # input=masked, pixel target: L1 on the masked patches only (MAE-style); false: all pixels
    masked_only: bool = True
    # true: the target is view 1 before photometric augmentation (same crop and flip; no jitter,
    # grayscale, blur, solarisation): its "natural appearance"; false: the augmented view 1
    clean_target: bool = True
    # MAE's norm_pix_loss: normalise the target per patch (mean 0, var 1 over the patch's pixels
    # and channels; patch = sr.patch for the pixel target, the whole 28x28 crop for object)
    norm_pix: bool = False
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
    # false: the masked copy is normalised with its own batch statistics but never updates the
    # online backbone's BN running statistics (they are exported); with shared_pass, a no-grad
    # pass over view 2 updates them instead. true: the earlier behaviour (masked pass updates them)
    masked_bn_update: bool = False


@dataclass
class EMAConfig:
    momentum: float = 0.99
    momentum_end: float = 1.0


class BoxRegNorm(StrEnum):
    """How the box stage normalises its L1 box regression (docs/method.md, "Box-domain stage")."""

    aligndet = "aligndet"  # sum over the 4 coordinates / number of RoIs (AlignDet, mmdet L1Loss)
    mean = "mean"  # mean over R x 4 values: AlignDet's / 4 (the box stage's first runs)


@dataclass
class BoxStageConfig:
    """The box-domain stage (``pretrain.stage: box``; AlignDet, docs/method.md)."""

    init: str | None = None  # backbone checkpoint (a 2DRCL pretrained.safetensors); None = random
    freeze_backbone: bool = True  # ResNet body frozen (no grad, BN in eval mode)
    momentum: float = 0.996  # EMA target, cosine to momentum_end per iteration
    momentum_end: float = 1.0
    temperature: float = 0.5
    embed_dim: int = 256  # the MLP that replaces the classifier
    match_iou: float = 0.5  # a RoI takes the id of the pseudo box it overlaps this much
    rois_per_image: int = 512  # positive RoIs sampled per image (AlignDet: 4096)
    contrast_weight: float = 1.0
    reg_weight: float = 1.0
    reg_norm: BoxRegNorm = BoxRegNorm.aligndet  # L1 over RoIs: "aligndet" = 4x "mean"


class ProbeReadout(StrEnum):
    C2 = "C2"
    C3 = "C3"
    C4 = "C4"
    C5 = "C5"
    roi = "roi"


@dataclass
class ProbeConfig:
    """Crop probe during pre-training (``drcl.analysis.probe``): NCM and kNN accuracy per
    frequency group on ground-truth box crops, and collapse monitors, logged as ``probe/*``."""

    every: int = 0  # iterations between probes (and at the end); 0 = off
    # eval json and images; None = annotations/tune.json and tune/ beside data.train_ann/_images
    ann: str | None = None
    images: str | None = None
    readout: ProbeReadout = ProbeReadout.C5  # pooled ResNet stage, or roi (FPN + box head)
    size: int = 64  # crop side, px
    context: float = 0.1  # margin per side, fraction of the box side
    k: int = 20  # kNN neighbours
    temperature: float = 0.07  # kNN vote weight exp(cos / T)
    max_per_class: int = 0  # at most N boxes of a class per split (0 = all; LVIS needs a cap)


@dataclass
class PretrainConfig:
    stage: PretrainStage = PretrainStage.image
    box: BoxStageConfig = field(default_factory=BoxStageConfig)
    proposals: ProposalConfig = field(default_factory=ProposalConfig)
    views: ViewConfig = field(default_factory=ViewConfig)
    hcl: HCLConfig = field(default_factory=HCLConfig)
    lcl: LCLConfig = field(default_factory=LCLConfig)
    drb: DRBConfig = field(default_factory=DRBConfig)
    ar: ARConfig = field(default_factory=ARConfig)
    sr: SRConfig = field(default_factory=SRConfig)
    ema: EMAConfig = field(default_factory=EMAConfig)
    probe: ProbeConfig = field(default_factory=ProbeConfig)
    # recompute the online encoder's ResNet stages in backward (torch.utils.checkpoint): same
    # numbers, peak memory down towards one pass's activations, one more stage forward each
    checkpointing: bool = False


@dataclass
class FinetuneConfig:
    arch: Arch = Arch.faster_rcnn
    loss: ClsLoss = ClsLoss.ce
    cosine_classifier: bool = False
    cosine_scale: float = 20.0
    rfs: bool = False
    rfs_threshold: float = 1e-3
    init: str | None = None  # pre-trained safetensors
    # an init from a detector with other classes: skip its class-specific layers, or copy the
    # rows of the classes both have (needs the init's category record)
    init_keep_classes: InitKeepClasses = InitKeepClasses.skip
    # AlignDet's rule (lr x pretrained_lr_mult, wd / pretrained_wd_div). Applied whatever the
    # init is, so that rows of a comparison differ in their initial weights only.
    aligndet_rule: bool = False
    pretrained_lr_mult: float = 1.5
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
    # one-stage detectors (retinanet / fcos / atss); defaults of mmdetection's atss_r50_fpn_1x
    focal_alpha: float = 0.25
    focal_gamma: float = 2.0  # also EFL's gamma_b
    efl_scale: float = 8.0  # EFL: gamma_j = gamma_b + scale * (1 - g_j)
    giou_weight: float = 2.0  # ATSS GIoU loss weight
    atss_topk: int = 9  # ATSS candidates per FPN level
    atss_anchor_scale: float = 8.0  # ATSS anchor side = scale * stride
    head_convs: int = 4  # FCOS / ATSS GN convs per branch
    topk_candidates: int = 1000  # per level before NMS (torchvision)
    eval_batch_size: int = 8


@dataclass
class Config:
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    pretrain: PretrainConfig = field(default_factory=PretrainConfig)
    finetune: FinetuneConfig = field(default_factory=FinetuneConfig)
