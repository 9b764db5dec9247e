"""The pre-training runner: the one place that reads the root config for ``drcl pretrain``.

It builds data, sampler, transforms, model and engine from their config sections, trains and
exports the backbone + FPN + box head weights.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from drcl.config import Config, save_config, to_dict
from drcl.config.schema import DataConfig, DRBConfig, ProbeConfig, ProposalConfig, TrainConfig
from drcl.data.coco import CocoIndex
from drcl.data.dataset import DetectionDataset
from drcl.engine import distributed as dist
from drcl.engine.epoch_data import SamplerEpochData
from drcl.engine.hooks import EMAHook, HookBase
from drcl.engine.schedule import scaled_lr, total_iters
from drcl.engine.setup import make_trainer, start_run
from drcl.engine.trainer import iters_per_epoch
from drcl.pretrain.box_composition import BoxCompositionHook, label_groups
from drcl.pretrain.dataset import PretrainDataset, collate_views
from drcl.proposals.core import Proposals, gt_proposals, load_proposals, write_proposals
from drcl.sampling.drb import (
    DynamicRebalancingSampler,
    RepeatFactors,
    repeat_factors_from_image_counts,
)
from drcl.sampling.progressive import ProgressiveDRBSampler
from drcl.transforms.views import TwoViewTransform
from drcl.utils.io import atomic_write_json
from drcl.utils.run_dir import RunDir
from drcl.utils.weights import save_state_dict

if TYPE_CHECKING:
    from torch import nn

    from drcl.models.drcl import DRCLModel

log = logging.getLogger(__name__)


def resolve_proposals(p: ProposalConfig, index: CocoIndex, work_dir: Path) -> Proposals:
    """The boxes to pre-train on (``pretrain.proposals``): the training boxes for ``source=gt``,
    else ``file`` (a results json; for ``source=detector`` the output of ``drcl proposals``)."""
    if p.source == "gt" and p.file:
        log.warning(
            "pretrain.proposals.file=%s is not read: pretrain.proposals.source=gt uses the "
            "training boxes (set source=file, or source=detector for `drcl proposals` output)",
            p.file,
        )
    if p.source == "gt":
        path = write_proposals(work_dir / "proposals_gt.json", gt_proposals(index.data))
    elif p.file is None and p.source == "file":
        raise ValueError("pretrain.proposals.source=file needs pretrain.proposals.file")
    elif p.file is None:
        raise ValueError(
            "pretrain.proposals.source=detector: run `drcl proposals CONFIG --out P.json` first "
            "and pass pretrain.proposals.file=P.json"
        )
    else:
        path = p.file
    return load_proposals(path, index.data, index.cat_id_to_label)


def drb_factors(drb: DRBConfig, index: CocoIndex) -> RepeatFactors:
    """Image- and instance-level repeat factors of the training set (``pretrain.drb``)."""
    labels = index.image_labels()
    return repeat_factors_from_image_counts(
        (labels.offsets, labels.labels),
        len(labels),
        drb.threshold,
        index.num_classes,
        instance_factor=drb.instance_factor,
    )


def build_pretrain_data(cfg: Config, work_dir: Path, info: dist.DistInfo) -> SamplerEpochData:
    index = CocoIndex.from_file(cfg.data.train_ann)
    images_dir = Path(cfg.data.train_images)
    if not images_dir.is_dir():
        raise FileNotFoundError(f"data.train_images: image folder {images_dir} does not exist")
    images = DetectionDataset(None, images_dir, on_error=cfg.data.on_error, index=index)
    factors = drb_factors(cfg.pretrain.drb, index)
    per_rank = cfg.train.batch_size // info.world_size
    if per_rank < 1 or per_rank * info.world_size != cfg.train.batch_size:
        raise ValueError(
            f"train.batch_size={cfg.train.batch_size} must be a multiple of the {info.world_size} "
            "processes"
        )
    ipe = iters_per_epoch(len(images), cfg.train.batch_size)
    sampler = build_drb_sampler(cfg.pretrain.drb, cfg.train, factors, per_rank, ipe, info)
    dataset = PretrainDataset(
        images,
        resolve_proposals(cfg.pretrain.proposals, index, work_dir),
        TwoViewTransform(cfg.pretrain.views),
        factors.class_instance if cfg.pretrain.drb.enabled else np.ones(index.num_classes + 1),
        cfg.pretrain.lcl.boxes_per_image,
        cfg.pretrain.sr.patch,
        cfg.pretrain.sr.ratio,
    )
    pin = dist.resolve_device(cfg.train.device).type == "cuda"  # async host-to-GPU copies
    data = SamplerEpochData(
        dataset, sampler, per_rank, ipe, collate_views, cfg.data.num_workers, pin_memory=pin
    )
    return data


def build_drb_sampler(
    drb: DRBConfig,
    train: TrainConfig,
    factors: RepeatFactors,
    per_rank: int,
    ipe: int,
    info: dist.DistInfo,
) -> DynamicRebalancingSampler | ProgressiveDRBSampler:
    """The pre-training sampler: alpha per iteration (default) or per sampler epoch."""
    shard = {"seed": train.seed, "num_replicas": info.world_size, "rank": info.rank}
    if drb.alpha_update == "epoch":
        return DynamicRebalancingSampler.from_config(factors, drb, with_context=True, **shard)
    return ProgressiveDRBSampler.from_config(
        factors,
        drb,
        batch_per_rank=per_rank,
        max_iters=total_iters(train, ipe),
        iters_per_epoch=ipe,
        accumulate=train.accumulate,
        **shard,
    )


def run_pretrain(cfg: Config, work_dir: str | Path, resume: bool = False) -> Path:
    """Pre-train and write ``work_dir/pretrained.safetensors``; returns its path."""
    if cfg.pretrain.stage == "box":  # the box-domain stage: its model, this loop
        from drcl.pretrain.box.runner import build_box_model

        info = {"stage": "box", "init": cfg.pretrain.box.init}
        return train_and_export(cfg, work_dir, resume, build_box_model, info)
    return train_and_export(
        cfg, work_dir, resume, build_drcl_model, {"stage": "pretrain", "init": cfg.model.weights}
    )


def train_and_export(
    cfg: Config,
    work_dir: str | Path,
    resume: bool,
    build_model: Callable[[Config], nn.Module],
    cost_info: dict,
) -> Path:
    """The pre-training loop shared by the image stage (2DRCL) and the box stage.

    ``build_model(cfg)`` returns a model with ``update_target(progress)`` (its EMA target);
    writes ``work_dir/pretrained.safetensors`` and returns its path.
    """
    device, info, work_dir = start_run(cfg.train, work_dir)
    if info.is_main:
        save_config(cfg, RunDir(work_dir).config)
    data = build_pretrain_data(cfg, work_dir, info)
    model = build_model(cfg).to(device)
    trainer = make_trainer(
        cfg.train,
        model,
        data,
        work_dir,
        device,
        info,
        scaled_lr(cfg.train),
        cfg.train.weight_decay,
        sync_bn=cfg.model.norm == "sync_bn",
        cost_info=cost_info,
    )
    hooks = pretrain_hooks(cfg.pretrain.probe, cfg.data, model, trainer.max_iters, work_dir, info)
    composition = BoxCompositionHook(label_groups(data.dataset.images.index))  # mechanism fig.
    # the EMA target first, as before a probe
    trainer.register_hooks([EMAHook(model), composition, *hooks])
    if resume:
        trainer.resume()
    trainer.fit()
    report = data.skip_report(data.dataset.images.index)
    if report:
        log.warning(report)
    out = RunDir(work_dir).pretrained
    if info.is_main:
        export_pretrained(model, to_dict(cfg), out, trainer.progress.iteration)
    dist.barrier()
    return out


def pretrain_hooks(
    p: ProbeConfig,
    d: DataConfig,
    model: nn.Module,
    max_iters: int,
    work_dir: Path,
    info: dist.DistInfo,
) -> list[HookBase]:
    """Hooks (``before_train / after_step / after_train``) the config asks for: the crop probe
    (``pretrain.probe.every``) on the online encoder; ``p`` is ``pretrain.probe``, ``d`` the
    ``data`` section (the default probe split is the tune split beside the training data)."""
    if p.every < 0:
        raise ValueError(f"pretrain.probe.every: got {p.every}, expected >= 0 (0 = off)")
    if p.every == 0:
        return []
    from drcl.pretrain.probe_hook import ProbeHook, default_probe_split

    if p.ann is not None and p.images is not None:
        split = (p.ann, p.images)
    elif p.ann is None and p.images is None:
        split = default_probe_split(d.train_ann, d.train_images)
    else:
        raise ValueError("pretrain.probe: set both ann and images, or neither (the tune split)")
    return [
        ProbeHook(
            model,
            p.every,
            max_iters,
            work_dir,
            d.train_ann,
            d.train_images,
            *split,
            readout=str(p.readout),
            size=p.size,
            context=p.context,
            k=p.k,
            temperature=p.temperature,
            max_per_class=p.max_per_class,
            enabled=info.is_main,
        )
    ]


def build_drcl_model(cfg: Config) -> DRCLModel:
    """The 2DRCL model of ``model.*`` and ``pretrain.*``."""
    from drcl.models.drcl import DRCLModel

    m, p = cfg.model, cfg.pretrain
    return DRCLModel(
        depth=m.depth,
        fpn_channels=m.fpn_channels,
        box_head_dim=m.box_head_dim,
        norm=m.norm,
        trainable_layers=m.trainable_layers,
        weights=m.weights,
        hcl=p.hcl,
        lcl=p.lcl,
        ar=p.ar,
        sr=p.sr,
        ema=p.ema,
        checkpointing=p.checkpointing,
    )


def export_pretrained(model: DRCLModel, config: dict, out: Path, iteration: int) -> None:
    """Backbone + FPN + box head in torchvision's key layout, plus a json saying what made it
    (``config``: the run's resolved config as a dict)."""
    state = {
        k: v
        for k, v in model.export_state_dict().items()
        if not k.endswith("num_batches_tracked")  # a BN counter, not a weight
    }
    save_state_dict(state, out, {"format": "pt"})
    atomic_write_json(
        out.with_suffix(".json"),
        {"keys": sorted(state), "iteration": iteration, "config": config},
        indent=1,
    )
