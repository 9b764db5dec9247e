"""The proposals runner: the one place that reads the root config for ``drcl proposals``.

``source=gt`` takes the training boxes, ``file`` validates and copies a results json,
``detector`` trains a class-agnostic Faster R-CNN (in ``OUT.detector/``) and runs it.
"""

from __future__ import annotations

import logging
import shutil
from collections import Counter
from pathlib import Path
from typing import Any

from drcl.config import Config, derive_config
from drcl.data.coco import CocoIndex
from drcl.proposals.core import gt_proposals, load_proposals, write_proposals
from drcl.utils.io import atomic_write_json, read_json

log = logging.getLogger(__name__)


def detector_config(cfg: Config, agnostic_ann: Path) -> Config:
    """The fine-tuning config of the class-agnostic proposal detector."""
    p = cfg.pretrain.proposals
    if p.detector_epochs < 0 or p.detector_iters < 1:
        raise ValueError(
            "pretrain.proposals: detector_epochs must be >= 0 and detector_iters >= 1, got "
            f"{p.detector_epochs} and {p.detector_iters}"
        )
    if p.detector_epochs > 0:  # dataset-proportional: the engine turns epochs into iterations
        # checkpoint_every 0: once per epoch
        length = {"train.max_iters": 0, "train.epochs": p.detector_epochs}
        length["train.checkpoint_every"] = 0
    else:
        length = {"train.max_iters": p.detector_iters, "train.checkpoint_every": p.detector_iters}
    return derive_config(
        cfg,
        {
            "data.train_ann": str(agnostic_ann),
            **length,
            "finetune.arch": "faster_rcnn",
            "finetune.loss": "ce",
            "finetune.rfs": False,
            "finetune.score_thresh": p.score_thresh,
            "finetune.nms_thresh": p.nms,
            "finetune.detections_per_img": p.top_n,
        },
    )


def run_detector_proposals(cfg: Config, out: Path) -> list[dict[str, Any]]:
    """Train the class-agnostic detector (in ``OUT.detector/``) and return its proposals."""
    from drcl.finetune.runner import train_detector
    from drcl.proposals.detector import class_agnostic_json, detect_proposals

    index = CocoIndex.from_file(cfg.data.train_ann)
    work_dir = detector_dir(out)
    agnostic = atomic_write_json(work_dir / "train_class_agnostic.json", class_agnostic_json(index))
    det_cfg = detector_config(cfg, agnostic)
    detector, device, _ = train_detector(det_cfg, work_dir, resume=True, stage="proposal_detector")
    p = det_cfg.pretrain.proposals
    return detect_proposals(
        detector,
        index,
        cfg.data.train_images,
        device,
        batch_size=det_cfg.finetune.eval_batch_size,
        min_size=p.min_size,
        label_iou=p.label_iou,
        on_error=det_cfg.data.on_error,
    )


def detector_dir(out: str | Path) -> Path:
    """The proposal detector's run folder next to ``out``: ``OUT.detector/``."""
    out = Path(out)
    return out.parent / f"{out.stem}.detector"


def _folder_mb(path: Path) -> float:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) / 2**20


def _after_detector(out: Path, clean: bool) -> None:
    """Say what ``OUT.detector/`` holds and delete it with ``clean``."""
    folder = detector_dir(out)
    if not folder.is_dir():
        return
    size = _folder_mb(folder)
    if clean:
        shutil.rmtree(folder)
        log.info("deleted the proposal detector's run folder %s (%.0f MB)", folder, size)
        return
    log.info(
        "kept the proposal detector's run folder %s (%.0f MB: checkpoints for a resumed run, "
        "model_final.safetensors, logs); delete it, or pass --clean-detector next time",
        folder,
        size,
    )


def run_proposals(cfg: Config, out: str | Path, clean_detector: bool = False) -> Path:
    """Write the proposals of ``pretrain.proposals.source`` to ``out``; returns its path.

    ``source=detector`` trains in ``OUT.detector/``; ``clean_detector`` deletes that folder
    once the proposals are written (it is kept by default: a rerun resumes from it).
    """
    out = Path(out)
    index = CocoIndex.from_file(cfg.data.train_ann)
    source = cfg.pretrain.proposals.source
    if source != "file" and cfg.pretrain.proposals.file:
        log.warning(
            "pretrain.proposals.file=%s is not read: pretrain.proposals.source=%s (set "
            "source=file to use that file)",
            cfg.pretrain.proposals.file,
            source,
        )
    if source == "gt":
        records = gt_proposals(index.data)
    elif source == "file":
        if not cfg.pretrain.proposals.file:
            raise ValueError("pretrain.proposals.source=file needs pretrain.proposals.file")
        load_proposals(cfg.pretrain.proposals.file, index.data, index.cat_id_to_label)  # validate
        records = read_json(cfg.pretrain.proposals.file)
    else:
        records = run_detector_proposals(cfg, out)
    write_proposals(out, records)
    if source == "detector":
        _after_detector(out, clean_detector)
    per_image = Counter(r["image_id"] for r in records)
    labelled = sum(r.get("category_id") is not None for r in records)
    empty = len(index.image_ids) - len(per_image)
    log.info(
        "%d proposals from '%s' on %d images (%d images with none; %d with a class) -> %s",
        len(records),
        source,
        len(per_image),
        empty,
        labelled,
        out,
    )
    return out
