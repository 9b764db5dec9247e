"""``drcl finetune``: train torchvision Faster / Mask R-CNN with the shared engine, evaluate."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file

from drcl.config import Config, load_config
from drcl.detection.data import build_finetune_data
from drcl.engine import distributed as dist
from drcl.engine.runner import make_trainer, start_run
from drcl.engine.schedule import scaled_lr
from drcl.utils.io import atomic_write, ensure_writable_dir


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


def train_detector(
    cfg: Config, work_dir: str | Path, init: str | None = None, resume: bool = False
) -> tuple[torch.nn.Module, torch.device, dist.DistInfo]:
    """Fine-tune a detector with the engine; writes ``model_final.safetensors``.

    From detection pre-training (``init``) the lr is x1.5 and the weight decay / 2 (AlignDet).
    """
    from drcl.detection.model import build_detector, load_pretrained

    device, info, work_dir = start_run(cfg, work_dir)
    data, index = build_finetune_data(cfg, info)
    # federated / ECM / Seesaw read training *image* counts per class (label order)
    freqs = torch.as_tensor(index.image_counts(), dtype=torch.float32)
    detector = build_detector(cfg, index.num_classes, freqs)
    if init:
        load_pretrained(detector, init)
    detector.to(device)
    lr, wd = scaled_lr(cfg.train), cfg.train.weight_decay
    if init:
        lr, wd = lr * cfg.finetune.pretrained_lr_mult, wd / cfg.finetune.pretrained_wd_div
    trainer = make_trainer(
        cfg, DetectorLoss(detector), data, work_dir, device, info, lr, wd, state_module=detector
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
    """LVIS-style evaluation on the validation set into ``work_dir/eval``."""
    from drcl.detection.inference import evaluate_detector

    iou_types = ["bbox", "segm"] if cfg.finetune.arch == "mask_rcnn" else ["bbox"]
    return evaluate_detector(cfg, detector, ensure_writable_dir(work_dir / "eval"), iou_types)


def cli_finetune(args: argparse.Namespace) -> int:
    cfg = load_config(args.config, args.overrides)
    results = run_finetune(cfg, args.work_dir, init=args.init, resume=args.resume)
    for iou_type, m in results.items():
        keys = ("AP", "AP50", "APr", "APc", "APf")
        print(f"{iou_type}: " + "  ".join(f"{k} {100 * (m.get(k) or 0):.2f}" for k in keys))
    return 0
