"""The fine-tuning runner of ``drcl finetune`` and ``drcl evaluate --checkpoint``.

It takes a job (:class:`~drcl.finetune.job.FinetuneJob`, :class:`~drcl.finetune.job.EvaluateJob`:
the config sections the stage reads, from the root config once), builds the data, the
torchvision detector and the engine, trains, saves ``model_final.safetensors`` and evaluates on
``data.val_ann`` with the LVIS rules.

Entry points (each takes a job): :func:`run_finetune` (train and evaluate; ``drcl finetune``,
ablation, demo), :func:`train_detector` (train only, returns the detector in memory: the proposal
detector, the length curve), :func:`evaluate_checkpoint` (``drcl evaluate --checkpoint``);
:func:`detector_for` builds the detector of a job.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch

from drcl.config.schema import ARCH_FAMILIES, DataConfig, GroupsConfig
from drcl.data.categories import (
    CATEGORIES_FILE,
    METADATA_KEY,
    CategoryTable,
    categories_for_checkpoint,
    match_categories,
)
from drcl.data.coco import CocoIndex
from drcl.data.dataset import DetectionDataset, collate
from drcl.detection.data import DetectionEpochData, FlipDataset
from drcl.engine import distributed as dist
from drcl.engine.schedule import Schedule, scaled_lr
from drcl.engine.setup import make_trainer, start_run
from drcl.engine.trainer import iters_per_epoch
from drcl.finetune.job import DetectorSpec, EvalSpec, EvaluateJob, FinetuneJob, check_iou_types
from drcl.sampling.drb import DynamicRebalancingSampler, repeat_factors_from_image_counts
from drcl.utils.io import atomic_write_json, atomic_write_text, ensure_writable_dir, read_json
from drcl.utils.run_dir import RunDir, detections_name, metrics_name
from drcl.utils.weights import save_state_dict

log = logging.getLogger(__name__)


class DetectorLoss(torch.nn.Module):
    """Adapter: ``forward((images, targets))`` -> the detector's loss dict plus their sum."""

    def __init__(self, detector: torch.nn.Module):
        super().__init__()
        self.detector = detector

    def forward(self, batch: tuple[list[torch.Tensor], list[dict]]) -> dict[str, torch.Tensor]:
        images, targets = batch
        losses = self.detector(images, targets)
        losses = {k if k.startswith("loss") else f"loss_{k}": v for k, v in losses.items()}
        return {"loss": sum(losses.values()), **losses}


def build_finetune_data(
    job: FinetuneJob, info: dist.DistInfo
) -> tuple[DetectionEpochData, CocoIndex]:
    """Training data of ``drcl finetune``: RFS at image level when ``finetune.rfs``."""
    data, ft, train = job.data, job.finetune, job.train
    index = CocoIndex.from_file(data.train_ann)
    images_dir = Path(data.train_images)
    if not images_dir.is_dir():
        raise FileNotFoundError(f"data.train_images: image folder {images_dir} does not exist")
    with_masks = ARCH_FAMILIES[ft.arch].masks
    images = DetectionDataset(
        None, images_dir, with_masks=with_masks, on_error=data.on_error, index=index
    )
    if ft.rfs:
        labels = index.image_labels()
        factors = repeat_factors_from_image_counts(
            (labels.offsets, labels.labels),
            len(labels),
            ft.rfs_threshold,
            index.num_classes,
        ).image
    else:
        factors = np.ones(len(images))
    sampler = DynamicRebalancingSampler(
        factors,
        seed=train.seed,
        dynamic=False,
        alpha_start=0.0,
        num_replicas=info.world_size,
        rank=info.rank,
        with_context=True,
    )
    per_rank = job.train.batch_size // info.world_size
    ipe = iters_per_epoch(len(images), job.train.batch_size)
    schedule = Schedule.from_train(job.train, ipe)
    epoch_data = DetectionEpochData(
        FlipDataset(images), sampler, per_rank, schedule, collate, data.num_workers
    )
    return epoch_data, index


def detector_for(
    spec: DetectorSpec, num_classes: int, class_freqs: torch.Tensor | None = None
) -> torch.nn.Module:
    """``finetune.arch`` on the ResNet-FPN of ``model.*``, resized to ``data.min_size`` /
    ``max_size`` (see :func:`drcl.detection.model.build_detector`).

    Args:
        spec: a job of the fine-tuning runner or of the attention maps, or a whole root config
            (tests, notebooks): what has the ``data``, ``model`` and ``finetune`` sections.
    """
    from drcl.detection.model import build_detector

    return build_detector(
        spec.model,
        spec.finetune,
        num_classes,
        class_freqs,
        min_size=spec.data.min_size,
        max_size=spec.data.max_size,
    )


def train_detector(job: FinetuneJob) -> tuple[torch.nn.Module, torch.device, dist.DistInfo]:
    """Fine-tune a detector with the engine; writes ``config.yaml``,
    ``model_final.safetensors`` and ``cost.json`` (whose ``stage`` field is ``job.stage``).

    With ``finetune.aligndet_rule`` the lr is x1.5 and the weight decay / 2 (AlignDet) for every
    init, random or pre-trained: a comparison of inits must not also compare optimiser settings.
    """
    from drcl.detection.model import load_pretrained

    ft, init = job.finetune, job.init
    device, info, work_dir = start_run(job.train, job.work_dir)
    if info.is_main:
        atomic_write_text(RunDir(work_dir).config, job.config_yaml)
    data, index = build_finetune_data(job, info)
    categories = training_categories(job.data.groups, index)
    if info.is_main:
        record_categories(categories, work_dir, job.resume)
    # federated / ECM / Seesaw read training *image* counts per class (label order)
    freqs = torch.as_tensor(index.image_counts(), dtype=torch.float32)
    detector = detector_for(job, index.num_classes, freqs)
    if init:
        load_pretrained(detector, init, categories=categories, keep_classes=ft.init_keep_classes)
    detector.to(device)
    lr, wd = scaled_lr(job.train), job.train.weight_decay
    if ft.aligndet_rule:
        lr, wd = lr * ft.pretrained_lr_mult, wd / ft.pretrained_wd_div
    trainer = make_trainer(
        job.train,
        DetectorLoss(detector),
        data,
        work_dir,
        device,
        info,
        lr,
        wd,
        sync_bn=job.model.norm == "sync_bn",
        state_module=detector,
        cost_info={"stage": job.stage, "init": str(init) if init else None},
    )
    if job.resume:
        trainer.resume()
    trainer.fit()
    report = data.skip_report(index)
    if report:
        log.warning(report)
    if info.is_main:
        save_detector(detector, RunDir(work_dir).model_final, categories)
    dist.barrier()
    return detector, device, info


def training_categories(groups: GroupsConfig, index: CocoIndex) -> CategoryTable:
    """The record of the training categories (``data.groups`` thresholds for ``frequency``)."""
    return CategoryTable.from_coco(index, groups.rare_max, groups.common_max)


def record_categories(categories: CategoryTable, work_dir: Path, resume: bool) -> None:
    """Write ``RUN/categories.json`` before training, so every checkpoint of the run has it.

    A resumed run whose training file now has other categories is refused: its checkpoints'
    labels mean the old categories.
    """
    path = work_dir / CATEGORIES_FILE
    if resume and path.is_file():
        before = CategoryTable.load(path)
        if before.records != categories.records:
            raise ValueError(
                f"{path}: the run was trained on other categories than {categories.source} "
                "has now; resuming would mislabel its checkpoints (start a new --work-dir)"
            )
    categories.save(path)


def run_finetune(job: FinetuneJob) -> RunDir:
    """Fine-tune, save ``model_final.safetensors`` and (``job.evaluate``) evaluate on
    ``data.val_ann`` into ``RUN/eval/metrics_<iou_type>.json``; returns the run folder."""
    if job.evaluate:
        check_val_categories(job.data)  # before training: a refusal must not come after hours
    detector, _, _ = train_detector(job)
    if job.evaluate:
        evaluate_model(job, detector)
    return RunDir(job.work_dir)


def check_val_categories(data: DataConfig) -> None:
    """Match ``data.val_ann``'s categories with ``data.train_ann``'s by id (raises on a name
    mismatch unless ``data.allow_category_mismatch``); logs the one-line summary."""
    train = CategoryTable.from_coco(data.train_ann)
    val = read_json(data.val_ann)
    cats = val.get("categories", []) if isinstance(val, dict) else []
    match = match_categories(train, cats, data.val_ann, data.allow_category_mismatch)
    if not match.exact:
        log.warning("%s", match.line(train))


def save_detector(
    detector: torch.nn.Module, path: Path, categories: CategoryTable | None = None
) -> None:
    """Weights as safetensors; the training categories go into the metadata (json string)."""
    metadata = {"format": "pt"}
    if categories is not None:
        metadata[METADATA_KEY] = json.dumps(categories.to_json())
    save_state_dict(detector.state_dict(), path, metadata)


def evaluate_model(job: FinetuneJob, detector: torch.nn.Module) -> dict[str, Any]:
    """LVIS-style evaluation on the validation set into ``RUN/eval``, labels mapped
    through the run's ``categories.json``."""
    out_dir = ensure_writable_dir(RunDir(job.work_dir).eval_dir)
    categories = CategoryTable.load(job.work_dir / CATEGORIES_FILE)
    return evaluate_detector(job, detector, out_dir, job.iou_types, categories)


def evaluate_detector(
    spec: EvalSpec,
    model: torch.nn.Module,
    out_dir: str | os.PathLike,
    iou_types: tuple[str, ...] | list[str],
    categories: CategoryTable,
) -> dict[str, Any]:
    """Run ``model`` on ``data.val_ann`` and evaluate with the LVIS rules.

    Model labels become category ids through ``categories`` (the model's training record);
    ``data.val_ann``'s categories are matched to them by id (:func:`match_categories`: the ids
    on one side only are named in one warning line and in the metrics' ``notes``; a name that
    differs for the same id is refused unless ``data.allow_category_mismatch``).

    Each rank writes its shard (``detections_bbox.rank{r}.json``), rank 0 merges them on disk
    into ``out_dir/detections_bbox.json`` (boxes, and masks for Mask R-CNN) and writes
    ``metrics_{iou_type}.json``; frequency groups come from ``data.train_ann``.

    Returns:
        ``{iou_type: metrics}`` on rank 0; ``{}`` on other ranks.
    """
    from drcl.detection.inference import merge_detections, rank_file, run_inference
    from drcl.engine.runtime import resolve_num_workers
    from drcl.evaluation.lvis_eval import evaluate_detections, json_safe

    data = spec.data
    check_iou_types(spec.finetune.arch, iou_types)
    dataset = DetectionDataset(data.val_ann, data.val_images, on_error=data.on_error)
    match = match_categories(
        categories, dataset.index.categories, data.val_ann, data.allow_category_mismatch
    )
    if not match.exact and dist.get_info().is_main:
        log.warning("%s", match.line(categories))
    info, device = dist.get_info(), dist.resolve_device(spec.device)
    rank, world = info.rank, info.world_size
    final = Path(out_dir) / detections_name("bbox")
    shards = [rank_file(final, r, world) for r in range(world)]
    batch = spec.finetune.eval_batch_size
    workers = resolve_num_workers(data.num_workers, device, world)  # -1: for the machine
    run_inference(
        model,
        dataset,
        batch,
        device,
        shards[rank],
        rank,
        world,
        workers,
        categories=categories,
        keep_ids=match.shared,
    )
    dist.barrier()
    if rank != 0:
        return {}
    if world > 1:
        merge_detections(shards, final)
        for shard in shards:
            shard.unlink()
    results = {}
    for t in iou_types:
        results[t] = evaluate_detections(
            data.val_ann,
            str(final),
            t,
            data.train_ann,
            rare_max=data.groups.rare_max,
            common_max=data.groups.common_max,
        )
        if not match.exact:
            results[t]["notes"] = [match.line(categories), *results[t].get("notes", [])]
        atomic_write_json(Path(out_dir) / metrics_name(t), json_safe(results[t]), indent=1)
    return results


def evaluate_checkpoint(job: EvaluateJob) -> dict[str, Any]:
    """Build the job's detector, load ``job.checkpoint`` and :func:`evaluate_detector` it into
    ``job.out_dir``; returns ``{iou_type: metrics}`` on rank 0 (``{}`` on other ranks).

    The number of classes and the label -> category id mapping come from the checkpoint's
    category record (:func:`checkpoint_categories`), never from ``data.val_ann``.
    """
    from drcl.detection.inference import load_detector_weights

    categories = checkpoint_categories(job.data, job.checkpoint)
    num_classes = categories.num_classes
    # Test scores never use class frequencies; ones let federated / ECM models be built.
    model = detector_for(job, num_classes, torch.ones(num_classes))
    report = load_detector_weights(model, job.checkpoint)
    log.info("%s", report.table())
    return evaluate_detector(job, model, job.out_dir, job.iou_types, categories)


def checkpoint_categories(data: DataConfig, checkpoint: str | os.PathLike) -> CategoryTable:
    """The checkpoint's training categories: its record (safetensors metadata or the run
    folder's ``categories.json``), else ``data.train_ann``'s with a warning (a checkpoint from
    before records, or from another tool)."""
    categories = categories_for_checkpoint(checkpoint)
    if categories is not None:
        return categories
    log.warning(
        "%s: no category record (metadata '%s' or %s next to it); taking the categories of "
        "data.train_ann=%s: make sure the model was trained on that file",
        checkpoint,
        METADATA_KEY,
        CATEGORIES_FILE,
        data.train_ann,
    )
    return training_categories(data.groups, CocoIndex.from_file(data.train_ann))
