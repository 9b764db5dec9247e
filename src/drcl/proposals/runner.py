"""The proposals runner of ``drcl proposals``, driven by its job
(:class:`~drcl.proposals.job.ProposalsJob`).

``source=gt`` takes the training boxes, ``file`` validates and copies a results json,
``detector`` trains a class-agnostic Faster R-CNN (the job's fine-tuning job, in
``OUT.detector/``) and runs it.
"""

from __future__ import annotations

import logging
import shutil
from collections import Counter
from pathlib import Path
from typing import Any

from drcl.data.coco import CocoIndex
from drcl.proposals.core import gt_proposals, load_proposals, write_proposals
from drcl.proposals.job import AGNOSTIC_ANN, ProposalsJob, detector_dir
from drcl.utils.io import atomic_write_json, read_json

log = logging.getLogger(__name__)


def run_detector_proposals(job: ProposalsJob, index: CocoIndex) -> list[dict[str, Any]]:
    """Train the class-agnostic detector (``job.detector``, in ``OUT.detector/``) with the
    fine-tuning runner and return its proposals on the training images."""
    from drcl.finetune.runner import train_detector
    from drcl.proposals.detector import class_agnostic_json, detect_proposals

    det = job.detector
    if det is None:
        raise ValueError("run_detector_proposals: the job has no detector (source is not detector)")
    atomic_write_json(det.work_dir / AGNOSTIC_ANN, class_agnostic_json(index))
    detector, device, _ = train_detector(det)
    return detect_proposals(
        detector,
        index,
        job.data.train_images,
        device,
        batch_size=det.finetune.eval_batch_size,
        min_size=job.proposals.min_size,
        label_iou=job.proposals.label_iou,
        on_error=det.data.on_error,
    )


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


def run_proposals(job: ProposalsJob) -> Path:
    """Write the proposals of ``pretrain.proposals.source`` to ``job.out``; returns its path.

    ``source=detector`` trains in ``OUT.detector/``; ``job.clean_detector`` deletes that folder
    once the proposals are written (it is kept by default: a rerun resumes from it).
    """
    out, p = job.out, job.proposals
    index = CocoIndex.from_file(job.data.train_ann)
    source = p.source
    if source != "file" and p.file:
        log.warning(
            "pretrain.proposals.file=%s is not read: pretrain.proposals.source=%s (set "
            "source=file to use that file)",
            p.file,
            source,
        )
    if source == "gt":
        records = gt_proposals(index.data)
    elif source == "file":
        load_proposals(p.file, index.data, index.cat_id_to_label)  # validate
        records = read_json(p.file)
    else:
        records = run_detector_proposals(job, index)
    write_proposals(out, records)
    if source == "detector":
        _after_detector(out, job.clean_detector)
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
