"""``drcl finetune``: train torchvision Faster / Mask R-CNN with the shared engine, evaluate."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file

from drcl.config import Config, load_config, save_config
from drcl.detection.data import build_finetune_data
from drcl.engine import distributed as dist
from drcl.engine.pretrain import _wrap_ddp
from drcl.engine.schedule import build_optimizer, build_scheduler, scaled_lr
from drcl.engine.trainer import Trainer, seed_everything
from drcl.utils.io import atomic_write, atomic_write_json, ensure_writable_dir


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


def _param_groups(
    model: torch.nn.Module, cfg: Config, pretrained: bool
) -> tuple[list, float, float]:
    """AlignDet: from detection pre-training, lr x1.5 and weight decay / 2."""
    lr, wd = scaled_lr(cfg.train), cfg.train.weight_decay
    if pretrained:
        lr, wd = lr * cfg.finetune.pretrained_lr_mult, wd / cfg.finetune.pretrained_wd_div
    params = [p for p in model.parameters() if p.requires_grad]
    return [{"params": params}], lr, wd


def train_detector(
    cfg: Config, work_dir: str | Path, init: str | None = None, resume: bool = False
) -> tuple[torch.nn.Module, torch.device, dist.DistInfo]:
    """Fine-tune a detector with the engine; writes ``model_final.safetensors``."""
    from drcl.detection.model import build_detector, load_pretrained

    device = dist.resolve_device(cfg.train.device)
    info = dist.init_from_env(device)
    work_dir = ensure_writable_dir(work_dir)
    if info.is_main:
        save_config(cfg, work_dir / "config.yaml")
    seed_everything(cfg.train.seed, cfg.train.deterministic)
    data, index = build_finetune_data(cfg, info)
    detector = build_detector(cfg, index.num_classes, index.instance_counts())
    if init:
        load_pretrained(detector, init)
    detector.to(device)
    groups, lr, wd = _param_groups(detector, cfg, pretrained=bool(init))
    optimizer = build_optimizer(groups, cfg.train, lr, wd)
    max_iters = cfg.train.max_iters or cfg.train.epochs * data.iters_per_epoch
    trainer = Trainer(
        _wrap_ddp(DetectorLoss(detector), device, cfg),
        optimizer,
        build_scheduler(optimizer, max_iters, cfg.train),
        data,
        cfg.train,
        work_dir,
        max_iters,
        device,
        info,
        extra_state={"data": data},
    )
    if resume:
        trainer.resume()
    trainer.fit()
    report = data.skip_report(index)
    if report and info.is_main:
        print(report)
    if info.is_main:
        save_detector(detector, work_dir / "model_final.safetensors")
    dist.barrier()
    return detector, device, info


def run_finetune(
    cfg: Config, work_dir: str | Path, init: str | None = None, resume: bool = False
) -> dict[str, Any]:
    """Fine-tune, save ``model_final.safetensors`` and evaluate on ``data.val_ann``.

    Returns the metrics per IoU type (``{"bbox": {...}, "segm": {...}}``).
    """
    init = init or cfg.finetune.init
    detector, device, info = train_detector(cfg, work_dir, init, resume)
    return evaluate_model(cfg, detector, Path(work_dir), device, info)


def save_detector(detector: torch.nn.Module, path: Path) -> None:
    state = {k: v.detach().cpu().contiguous() for k, v in detector.state_dict().items()}
    atomic_write(path, lambda tmp: save_file(state, tmp, metadata={"format": "pt"}))


def evaluate_model(
    cfg: Config, detector: torch.nn.Module, work_dir: Path, device: torch.device, info
) -> dict[str, Any]:
    """LVIS-style evaluation on the validation set: per-rank detections merged on disk."""
    from drcl.data.dataset import DetectionDataset
    from drcl.detection.inference import merge_detections, run_inference
    from drcl.evaluation.lvis_eval import evaluate_detections

    eval_dir = ensure_writable_dir(work_dir / "eval")
    dataset = DetectionDataset(cfg.data.val_ann, cfg.data.val_images, on_error=cfg.data.on_error)
    iou_types = ["bbox", "segm"] if cfg.finetune.arch == "mask_rcnn" else ["bbox"]
    part = eval_dir / f"detections_rank{info.rank}.json"
    run_inference(
        detector, dataset, cfg.finetune.eval_batch_size, device, part, info.rank, info.world_size
    )
    dist.barrier()
    results: dict[str, Any] = {}
    if info.is_main:
        parts = sorted(eval_dir.glob("detections_rank*.json"))
        merged = eval_dir / "detections_bbox.json"
        merge_detections(parts, merged)
        for part in parts:
            part.unlink()
        for iou_type in iou_types:
            metrics = evaluate_detections(
                cfg.data.val_ann, merged, iou_type=iou_type, train_ann=cfg.data.train_ann
            )
            atomic_write_json(eval_dir / f"metrics_{iou_type}.json", metrics, indent=1)
            results[iou_type] = metrics
    return results


def cli_finetune(args: argparse.Namespace) -> int:
    cfg = load_config(args.config, args.overrides)
    results = run_finetune(cfg, args.work_dir, init=args.init, resume=args.resume)
    for iou_type, m in results.items():
        keys = ("AP", "AP50", "APr", "APc", "APf")
        print(f"{iou_type}: " + "  ".join(f"{k} {100 * (m.get(k) or 0):.2f}" for k in keys))
    return 0
