"""The layout of a run folder (``--work-dir``), named once.

Every stage writes, and the report, evaluation, prediction, ablation and demo read, the same
files::

    RUN/config.yaml                 the resolved config
    RUN/metrics.jsonl               one json per logging step (iter, lr, loss, loss_*, alpha, ...)
    RUN/cost.json                   wall time, images/s, peak memory
    RUN/model_final.safetensors     fine-tuning run: the detector
    RUN/pretrained.safetensors      pre-training run: backbone + FPN + box head (+ pretrained.json)
    RUN/eval/metrics_bbox.json      evaluation of the run's own model (and metrics_segm.json)
    RUN/eval/detections_bbox.json   its detections, COCO results format

:class:`RunDir` gives the paths; :func:`read_metrics` is the one reader of ``metrics.jsonl``.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = [
    "CONFIG",
    "COST",
    "EVAL",
    "METRICS",
    "MODEL_FINAL",
    "PRETRAINED",
    "PRETRAINED_INFO",
    "RunDir",
    "detections_name",
    "metrics_name",
    "read_metrics",
]

CONFIG = "config.yaml"
METRICS = "metrics.jsonl"
COST = "cost.json"
MODEL_FINAL = "model_final.safetensors"
PRETRAINED = "pretrained.safetensors"
PRETRAINED_INFO = "pretrained.json"
EVAL = "eval"


def metrics_name(iou_type: str = "bbox") -> str:
    """``metrics_bbox.json`` / ``metrics_segm.json``: an evaluation's metrics file."""
    return f"metrics_{iou_type}.json"


def detections_name(iou_type: str = "bbox") -> str:
    """``detections_bbox.json`` / ``detections_segm.json``: detections in COCO results format."""
    return f"detections_{iou_type}.json"


@dataclass(frozen=True)
class RunDir:
    """Paths inside one run folder (nothing is created or checked here).

    Attributes:
        path: the run folder.
    """

    path: Path

    def __init__(self, path: str | os.PathLike) -> None:
        object.__setattr__(self, "path", Path(path))

    @property
    def config(self) -> Path:
        return self.path / CONFIG

    @property
    def metrics(self) -> Path:
        return self.path / METRICS

    @property
    def cost(self) -> Path:
        return self.path / COST

    @property
    def model_final(self) -> Path:
        return self.path / MODEL_FINAL

    @property
    def pretrained(self) -> Path:
        return self.path / PRETRAINED

    @property
    def pretrained_info(self) -> Path:
        return self.path / PRETRAINED_INFO

    @property
    def eval_dir(self) -> Path:
        return self.path / EVAL

    def eval_metrics(self, iou_type: str = "bbox") -> Path:
        """``RUN/eval/metrics_<iou_type>.json``."""
        return self.eval_dir / metrics_name(iou_type)

    def detections(self, iou_type: str = "bbox") -> Path:
        """``RUN/eval/detections_<iou_type>.json``."""
        return self.eval_dir / detections_name(iou_type)


def read_metrics(path: str | os.PathLike) -> list[dict[str, Any]]:
    """Rows of a ``metrics.jsonl`` file, in file order.

    A torn last line (a run killed while writing) is skipped; a broken line before it is an
    error naming the file and line, since it means the file was edited or corrupted. Blank
    lines and lines that are not json objects are skipped.

    Raises:
        FileNotFoundError: no such file.
        ValueError: invalid json before the last line (names file and line).
    """
    path = Path(path)
    rows: list[dict[str, Any]] = []
    lines = path.read_text().splitlines()
    for k, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as err:
            if k == len(lines):
                break
            raise ValueError(f"{path}: invalid JSON at line {k}: {err.msg}") from err
        if isinstance(row, dict):
            rows.append(row)
    return rows
