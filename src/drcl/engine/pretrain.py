"""``drcl pretrain``: build data, sampler, model and engine from a config, train, export weights."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import numpy as np
from safetensors.torch import save_file

from drcl.config import Config, load_config, to_dict
from drcl.data.coco import CocoIndex
from drcl.data.dataset import DetectionDataset
from drcl.data.pretrain import PretrainDataset, SamplerEpochData
from drcl.engine import distributed as dist
from drcl.engine.runner import make_trainer, start_run
from drcl.engine.schedule import scaled_lr
from drcl.engine.trainer import iters_per_epoch
from drcl.proposals.core import Proposals, gt_proposals, load_proposals, write_proposals
from drcl.sampling.drb import DynamicRebalancingSampler, repeat_factors_from_image_counts
from drcl.transforms.views import TwoViewTransform
from drcl.utils.io import atomic_write, atomic_write_json


def resolve_proposals(cfg: Config, index: CocoIndex, work_dir: Path) -> Proposals:
    """The boxes to pre-train on: ``pretrain.proposals_file``, else ``proposals.source``."""
    path = cfg.pretrain.proposals_file
    source = cfg.pretrain.proposals.source
    if path is None and source == "file":
        path = cfg.pretrain.proposals.file
        if path is None:
            raise ValueError("pretrain.proposals.source=file needs pretrain.proposals.file")
    if path is None and source == "detector":
        raise ValueError(
            "pretrain.proposals.source=detector: run `drcl proposals CONFIG --out P.json` first "
            "and pass pretrain.proposals_file=P.json"
        )
    if path is None:  # source=gt: the training boxes with their classes
        path = write_proposals(work_dir / "proposals_gt.json", gt_proposals(index.data))
    return load_proposals(path, index.data, index.cat_id_to_label)


def build_pretrain_data(cfg: Config, work_dir: Path, info: dist.DistInfo) -> SamplerEpochData:
    index = CocoIndex.from_file(cfg.data.train_ann)
    images_dir = Path(cfg.data.train_images)
    if not images_dir.is_dir():
        raise FileNotFoundError(f"data.train_images: image folder {images_dir} does not exist")
    images = DetectionDataset(None, images_dir, on_error=cfg.data.on_error, index=index)
    labels = index.image_labels()
    factors = repeat_factors_from_image_counts(
        (labels.offsets, labels.labels), len(labels), cfg.pretrain.drb.threshold, index.num_classes
    )
    per_rank = cfg.train.batch_size // info.world_size
    if per_rank < 1 or per_rank * info.world_size != cfg.train.batch_size:
        raise ValueError(
            f"train.batch_size={cfg.train.batch_size} must be a multiple of the {info.world_size} "
            "processes"
        )
    sampler = DynamicRebalancingSampler.from_config(
        factors,
        cfg.pretrain.drb,
        seed=cfg.train.seed,
        num_replicas=info.world_size,
        rank=info.rank,
        with_context=True,
    )
    dataset = PretrainDataset(
        images,
        resolve_proposals(cfg, index, work_dir),
        TwoViewTransform(cfg.pretrain.views),
        factors.class_instance if cfg.pretrain.drb.enabled else np.ones(index.num_classes + 1),
        cfg.pretrain.lcl.boxes_per_image,
        cfg.pretrain.sr.patch,
        cfg.pretrain.sr.ratio,
    )
    ipe = iters_per_epoch(len(images), cfg.train.batch_size)
    return SamplerEpochData(dataset, sampler, per_rank, ipe, cfg.data.num_workers)


def run_pretrain(cfg: Config, work_dir: str | Path, resume: bool = False) -> Path:
    """Pre-train and write ``work_dir/pretrained.safetensors``; returns its path."""
    from drcl.models.drcl import DRCLModel

    device, info, work_dir = start_run(cfg, work_dir)
    data = build_pretrain_data(cfg, work_dir, info)
    model = DRCLModel.from_config(cfg).to(device)
    trainer = make_trainer(
        cfg,
        model,
        data,
        work_dir,
        device,
        info,
        scaled_lr(cfg.train),
        cfg.train.weight_decay,
        after_step=lambda it, p: model.update_target(p),
    )
    if resume:
        trainer.resume()
    trainer.fit()
    report = data.skip_report(data.dataset.images.index)
    if report and info.is_main:
        print(report)
    out = work_dir / "pretrained.safetensors"
    if info.is_main:
        export_pretrained(model, cfg, out, trainer.progress.iteration)
    dist.barrier()
    return out


def export_pretrained(model: Any, cfg: Config, out: Path, iteration: int) -> None:
    """Backbone + FPN + box head in torchvision's key layout, plus a json saying what made it."""
    state = {
        k: v.detach().cpu().contiguous()
        for k, v in model.export_state_dict().items()
        if not k.endswith("num_batches_tracked")  # a BN counter, not a weight
    }
    atomic_write(out, lambda tmp: save_file(state, tmp, metadata={"format": "pt"}))
    atomic_write_json(
        out.with_suffix(".json"),
        {"keys": sorted(state), "iteration": iteration, "config": to_dict(cfg)},
        indent=1,
    )


def cli_pretrain(args: argparse.Namespace) -> int:
    cfg = load_config(args.config, args.overrides)
    out = run_pretrain(cfg, args.work_dir, resume=args.resume)
    if dist.get_info().is_main:
        print(f"pre-trained weights: {out}")
    return 0
