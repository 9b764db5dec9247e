"""The fine-tuning runner: the one place that reads the root config for ``drcl finetune`` and
``drcl evaluate --checkpoint``.

It builds the data, the torchvision detector and the engine from their config sections, trains,
saves ``model_final.safetensors`` and evaluates on ``data.val_ann`` with the LVIS rules.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch

from drcl.config import Config, save_config
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
from drcl.sampling.drb import DynamicRebalancingSampler, repeat_factors_from_image_counts
from drcl.utils.io import atomic_write_json, ensure_writable_dir, read_json
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


def build_finetune_data(cfg: Config, info: dist.DistInfo) -> tuple[DetectionEpochData, CocoIndex]:
    """Training data of ``drcl finetune``: RFS at image level when ``finetune.rfs``."""
    index = CocoIndex.from_file(cfg.data.train_ann)
    images_dir = Path(cfg.data.train_images)
    if not images_dir.is_dir():
        raise FileNotFoundError(f"data.train_images: image folder {images_dir} does not exist")
    with_masks = ARCH_FAMILIES[cfg.finetune.arch].masks
    images = DetectionDataset(
        None, images_dir, with_masks=with_masks, on_error=cfg.data.on_error, index=index
    )
    if cfg.finetune.rfs:
        labels = index.image_labels()
        factors = repeat_factors_from_image_counts(
            (labels.offsets, labels.labels),
            len(labels),
            cfg.finetune.rfs_threshold,
            index.num_classes,
        ).image
    else:
        factors = np.ones(len(images))
    sampler = DynamicRebalancingSampler(
        factors,
        seed=cfg.train.seed,
        dynamic=False,
        alpha_start=0.0,
        num_replicas=info.world_size,
        rank=info.rank,
        with_context=True,
    )
    per_rank = cfg.train.batch_size // info.world_size
    ipe = iters_per_epoch(len(images), cfg.train.batch_size)
    schedule = Schedule.from_train(cfg.train, ipe)
    data = DetectionEpochData(
        FlipDataset(images), sampler, per_rank, schedule, collate, cfg.data.num_workers
    )
    return data, index


def build_detector_from_config(
    cfg: Config, num_classes: int, class_freqs: torch.Tensor | None = None
) -> torch.nn.Module:
    """``finetune.arch`` on the ResNet-FPN of ``model.*`` (see
    :func:`drcl.detection.model.build_detector`)."""
    from drcl.detection.model import build_detector

    return build_detector(
        cfg.model,
        cfg.finetune,
        num_classes,
        class_freqs,
        min_size=cfg.data.min_size,
        max_size=cfg.data.max_size,
    )


def train_detector(
    cfg: Config,
    work_dir: str | Path,
    init: str | None = None,
    resume: bool = False,
    stage: str = "finetune",
) -> tuple[torch.nn.Module, torch.device, dist.DistInfo]:
    """Fine-tune a detector with the engine; writes ``model_final.safetensors`` and
    ``cost.json`` (whose ``stage`` field is ``stage``).

    With ``finetune.aligndet_rule`` the lr is x1.5 and the weight decay / 2 (AlignDet) for every
    init, random or pre-trained: a comparison of inits must not also compare optimiser settings.
    """
    from drcl.detection.model import load_pretrained

    device, info, work_dir = start_run(cfg.train, work_dir)
    if info.is_main:
        save_config(cfg, RunDir(work_dir).config)
    data, index = build_finetune_data(cfg, info)
    categories = training_categories(cfg.data.groups, index)
    if info.is_main:
        record_categories(categories, work_dir, resume)
    # federated / ECM / Seesaw read training *image* counts per class (label order)
    freqs = torch.as_tensor(index.image_counts(), dtype=torch.float32)
    detector = build_detector_from_config(cfg, index.num_classes, freqs)
    if init:
        load_pretrained(
            detector, init, categories=categories, keep_classes=cfg.finetune.init_keep_classes
        )
    detector.to(device)
    lr, wd = scaled_lr(cfg.train), cfg.train.weight_decay
    if cfg.finetune.aligndet_rule:
        lr, wd = lr * cfg.finetune.pretrained_lr_mult, wd / cfg.finetune.pretrained_wd_div
    trainer = make_trainer(
        cfg.train,
        DetectorLoss(detector),
        data,
        work_dir,
        device,
        info,
        lr,
        wd,
        sync_bn=cfg.model.norm == "sync_bn",
        state_module=detector,
        cost_info={"stage": stage, "init": str(init) if init else None},
    )
    if resume:
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


def run_finetune(
    cfg: Config, work_dir: str | Path, init: str | None = None, resume: bool = False
) -> dict[str, Any]:
    """Fine-tune, save ``model_final.safetensors`` and evaluate on ``data.val_ann``.

    Returns the metrics per IoU type (``{"bbox": {...}, "segm": {...}}``).
    """
    init = init or cfg.finetune.init
    check_val_categories(cfg.data)  # before training: a refusal must not come after hours
    detector, _, _ = train_detector(cfg, work_dir, init, resume)
    return evaluate_model(cfg, detector, Path(work_dir))


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


def iou_types_of(arch: str) -> list[str]:
    """Box AP always; mask AP too for a detector with masks (``finetune.arch``)."""
    return ["bbox", "segm"] if ARCH_FAMILIES[arch].masks else ["bbox"]


def evaluate_model(cfg: Config, detector: torch.nn.Module, work_dir: Path) -> dict[str, Any]:
    """LVIS-style evaluation on the validation set into ``work_dir/eval``, labels mapped
    through the run's ``categories.json``."""
    out_dir = ensure_writable_dir(RunDir(work_dir).eval_dir)
    categories = CategoryTable.load(work_dir / CATEGORIES_FILE)
    return evaluate_detector(cfg, detector, out_dir, iou_types_of(cfg.finetune.arch), categories)


def _check_iou_types(arch: str, iou_types: tuple[str, ...] | list[str]) -> None:
    if "segm" in iou_types and not ARCH_FAMILIES[arch].masks:
        raise ValueError("iou_type 'segm' needs finetune.arch=mask_rcnn")


def evaluate_detector(
    cfg: Config,
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

    _check_iou_types(cfg.finetune.arch, iou_types)
    dataset = DetectionDataset(cfg.data.val_ann, cfg.data.val_images, on_error=cfg.data.on_error)
    match = match_categories(
        categories, dataset.index.categories, cfg.data.val_ann, cfg.data.allow_category_mismatch
    )
    if not match.exact and dist.get_info().is_main:
        log.warning("%s", match.line(categories))
    info, device = dist.get_info(), dist.resolve_device(cfg.train.device)
    rank, world = info.rank, info.world_size
    final = Path(out_dir) / detections_name("bbox")
    shards = [rank_file(final, r, world) for r in range(world)]
    batch = cfg.finetune.eval_batch_size
    workers = resolve_num_workers(cfg.data.num_workers, device, world)  # -1: for the machine
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
            cfg.data.val_ann,
            str(final),
            t,
            cfg.data.train_ann,
            rare_max=cfg.data.groups.rare_max,
            common_max=cfg.data.groups.common_max,
        )
        if not match.exact:
            results[t]["notes"] = [match.line(categories), *results[t].get("notes", [])]
        atomic_write_json(Path(out_dir) / metrics_name(t), json_safe(results[t]), indent=1)
    return results


def evaluate_checkpoint(
    cfg: Config,
    checkpoint: str | os.PathLike,
    work_dir: str | os.PathLike,
    iou_types: tuple[str, ...] | list[str] | None = None,
) -> dict[str, Any]:
    """Build the detector of ``cfg``, load ``checkpoint`` and :func:`evaluate_detector` it
    into ``work_dir`` (default IoU types: :func:`iou_types_of`).

    The number of classes and the label -> category id mapping come from the checkpoint's
    category record (:func:`checkpoint_categories`), never from ``data.val_ann``.
    """
    from drcl.detection.inference import load_detector_weights

    iou_types = iou_types_of(cfg.finetune.arch) if iou_types is None else iou_types
    _check_iou_types(cfg.finetune.arch, iou_types)
    categories = checkpoint_categories(cfg.data, checkpoint)
    num_classes = categories.num_classes
    # Test scores never use class frequencies; ones let federated / ECM models be built.
    model = build_detector_from_config(cfg, num_classes, torch.ones(num_classes))
    report = load_detector_weights(model, checkpoint)
    log.info("%s", report.table())
    return evaluate_detector(cfg, model, work_dir, iou_types, categories)


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
