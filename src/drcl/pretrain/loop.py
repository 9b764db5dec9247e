"""The pre-training loop shared by the image stage (2DRCL, :mod:`drcl.pretrain.runner`) and the
box stage (:mod:`drcl.pretrain.box.runner`): data, schedule, sampler, hooks, training and export.

It reads config sections, never the root config: the runners turn that into a
:class:`PretrainLoopJob`. :func:`build_pretrain_data` is also the one way to replay the sample
draw without training (``labels_only``: :func:`drcl.analysis.runner.simulate_box_composition`).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from torch import nn

from drcl.config.schema import (
    DataConfig,
    DRBConfig,
    PretrainConfig,
    ProbeConfig,
    ProposalConfig,
    TrainConfig,
)
from drcl.data.coco import CocoIndex
from drcl.data.dataset import DetectionDataset
from drcl.engine import distributed as dist
from drcl.engine.epoch_data import SamplerEpochData
from drcl.engine.hooks import EMAHook, HookBase
from drcl.engine.schedule import Schedule, scaled_lr
from drcl.engine.setup import make_trainer
from drcl.engine.trainer import RunEnv, iters_per_epoch
from drcl.pretrain.box_composition import BoxCompositionHook, label_groups
from drcl.pretrain.dataset import BoxDrawDataset, PretrainDataset, collate_draws, collate_views
from drcl.proposals.core import Proposals, gt_proposals, load_proposals, write_proposals
from drcl.sampling.drb import (
    DynamicRebalancingSampler,
    RepeatFactors,
    alpha_curve,
    repeat_factors_from_image_counts,
)
from drcl.sampling.progressive import ProgressiveDRBSampler
from drcl.transforms.views import TwoViewTransform
from drcl.utils.io import atomic_write_json
from drcl.utils.run_dir import RunDir
from drcl.utils.weights import save_state_dict

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PretrainLoopJob:
    """What the shared loop reads (built by the pre-training runners from the root config).

    Args:
        data, train, pretrain: the config's sections.
        sync_bn: SyncBatchNorm under DDP (``model.norm == "sync_bn"``).
        config: the run's resolved config as a dict (written beside the exported weights).
        cost_info: the ``stage`` and ``init`` fields of ``cost.json``.
    """

    data: DataConfig
    train: TrainConfig
    pretrain: PretrainConfig
    sync_bn: bool = False
    config: dict[str, Any] = field(default_factory=dict)
    cost_info: dict[str, Any] = field(default_factory=dict)


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


def pretrain_schedule(train: TrainConfig, drb: DRBConfig, ipe: int) -> Schedule:
    """The run's schedule: ``train``'s length over ``ipe`` batches an epoch, with DRB's alpha
    curve per iteration or per sampler epoch (``pretrain.drb.alpha_update``)."""
    return Schedule.from_train(train, ipe, alpha_curve(drb), alpha_per=str(drb.alpha_update))


def build_drb_sampler(
    drb: DRBConfig,
    schedule: Schedule,
    factors: RepeatFactors,
    per_rank: int,
    seed: int,
    info: dist.DistInfo,
) -> DynamicRebalancingSampler | ProgressiveDRBSampler:
    """The pre-training sampler: alpha per iteration (default) or per sampler epoch."""
    shard = {"seed": seed, "num_replicas": info.world_size, "rank": info.rank}
    if schedule.alpha_per == "epoch":
        return DynamicRebalancingSampler.from_config(factors, drb, with_context=True, **shard)
    return ProgressiveDRBSampler.from_config(
        factors, drb, batch_per_rank=per_rank, schedule=schedule, **shard
    )


def build_pretrain_data(
    data: DataConfig,
    train: TrainConfig,
    pretrain: PretrainConfig,
    work_dir: Path,
    info: dist.DistInfo,
    labels_only: bool = False,
) -> SamplerEpochData:
    """The pre-training stream of this rank (sampler, boxes, views), with its schedule.

    With ``labels_only`` the images are not read: each batch is the labels of the boxes each
    sample draws (before crops drop any), the same draws as training, in one process.
    """
    index = CocoIndex.from_file(data.train_ann)
    factors = drb_factors(pretrain.drb, index)
    per_rank = train.batch_size // info.world_size
    if per_rank < 1 or per_rank * info.world_size != train.batch_size:
        raise ValueError(
            f"train.batch_size={train.batch_size} must be a multiple of the {info.world_size} "
            "processes"
        )
    images_dir = Path(data.train_images)
    if not labels_only and not images_dir.is_dir():
        raise FileNotFoundError(f"data.train_images: image folder {images_dir} does not exist")
    ipe = iters_per_epoch(len(index.image_ids), train.batch_size)
    schedule = pretrain_schedule(train, pretrain.drb, ipe)
    sampler = build_drb_sampler(pretrain.drb, schedule, factors, per_rank, train.seed, info)
    proposals = resolve_proposals(pretrain.proposals, index, Path(work_dir))
    class_factors = (
        factors.class_instance if pretrain.drb.enabled else np.ones(index.num_classes + 1)
    )
    if labels_only:
        draws = BoxDrawDataset(index, proposals, class_factors, pretrain.lcl.boxes_per_image)
        return SamplerEpochData(draws, sampler, per_rank, schedule, collate_draws)
    images = DetectionDataset(None, images_dir, on_error=data.on_error, index=index)
    dataset = PretrainDataset(
        images,
        proposals,
        TwoViewTransform(pretrain.views),
        class_factors,
        pretrain.lcl.boxes_per_image,
        pretrain.sr.patch,
        pretrain.sr.ratio,
    )
    pin = dist.resolve_device(train.device).type == "cuda"  # async host-to-GPU copies
    return SamplerEpochData(
        dataset, sampler, per_rank, schedule, collate_views, data.num_workers, pin_memory=pin
    )


def train_and_export(
    job: PretrainLoopJob, env: RunEnv, resume: bool, build_model: Callable[[], nn.Module]
) -> Path:
    """Train the model of ``build_model()`` (its ``update_target(progress)`` is the EMA target)
    on the pre-training stream and write ``env.work_dir/pretrained.safetensors``; returns its
    path. ``env`` comes from :func:`~drcl.engine.setup.start_run` (seeded: the data is built
    before the model, which draws its initial weights)."""
    device, info, work_dir = env
    data = build_pretrain_data(job.data, job.train, job.pretrain, work_dir, info)
    model = build_model().to(device)
    index = data.dataset.images.index
    probe = pretrain_hooks(job.pretrain.probe, job.data, model, data.schedule, work_dir, info)
    hooks = [
        EMAHook(model),  # the EMA target first, as before a probe
        BoxCompositionHook(label_groups(index)),  # the mechanism figure
        *probe,
    ]
    trainer = make_trainer(
        job.train,
        model,
        data,
        work_dir,
        device,
        info,
        scaled_lr(job.train),
        job.train.weight_decay,
        sync_bn=job.sync_bn,
        cost_info=job.cost_info,
        hooks=hooks,
    )
    if resume:
        trainer.resume()
    trainer.fit()
    report = data.skip_report(index)
    if report:
        log.warning(report)
    out = RunDir(work_dir).pretrained
    if info.is_main:
        export_pretrained(model, job.config, out, trainer.iteration)
    dist.barrier()
    return out


def pretrain_hooks(
    p: ProbeConfig,
    d: DataConfig,
    model: nn.Module,
    schedule: Schedule,
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
            schedule.max_iters,
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


def export_pretrained(model: nn.Module, config: dict, out: Path, iteration: int) -> None:
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
