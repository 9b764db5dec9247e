"""Run folders as the report reads them.

Layout (written by ``drcl pretrain`` / ``drcl finetune`` / ``drcl evaluate``)::

    RUN/config.yaml                 resolved config (data.train_ann, data.val_ann, finetune.arch)
    RUN/metrics.jsonl               one json per logging step: iter, lr, loss, loss_*, alpha, ...
    RUN/cost.json                   wall time, images/s, peak memory (drcl.engine.cost)
    RUN/model_final.safetensors     fine-tuning run: the detector
    RUN/eval/metrics_bbox.json      AP, AP50, ..., APr/APc/APf, [AP1..AP4], [per_class]
    RUN/eval/metrics_segm.json      Mask R-CNN only
    RUN/eval/detections_bbox.json   COCO results format
    RUN/pretrained.safetensors      pre-training run (+ pretrained.json)
    RUN/attention/*.png             attention maps, when analysed

Reading never raises for a missing or broken *file*: what could not be read is kept in
``RunInfo.problems`` and the report shows it as "not available: reason". Only a run folder that
does not exist (or holds none of the files above) is an error, raised before anything is written.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from drcl.utils.io import read_json
from drcl.utils.run_dir import (
    CONFIG,
    COST,
    EVAL,
    METRICS,
    MODEL_FINAL,
    PRETRAINED,
    PRETRAINED_INFO,
    RunDir,
    read_metrics,
)

RUN_MARKERS = (
    CONFIG,
    METRICS,
    EVAL,
    MODEL_FINAL,
    PRETRAINED,
    PRETRAINED_INFO,
    COST,
)
IOU_TYPES = ("bbox", "segm")


@dataclass
class RunInfo:
    """What the report knows about one run folder.

    Attributes:
        name: display name (folder name, or NAME from ``NAME=DIR``).
        path: the run folder.
        slug: ``name`` made safe for file names (unique among the runs of one report).
        config: the parsed ``config.yaml`` (``{}`` when missing or unreadable).
        metrics: rows of ``metrics.jsonl`` in file order (``[]`` when missing).
        evals: ``{"bbox" | "segm": metrics dict}`` for the eval files that could be read.
        problems: ``{what: reason}`` for files that exist but could not be read.
    """

    name: str
    path: Path
    slug: str = ""
    config: dict[str, Any] = field(default_factory=dict)
    metrics: list[dict[str, Any]] = field(default_factory=list)
    evals: dict[str, dict[str, Any]] = field(default_factory=dict)
    problems: dict[str, str] = field(default_factory=dict)

    @property
    def kind(self) -> str:
        """'pre-training', 'fine-tuning' or 'other' (from the files the run holds)."""
        run = RunDir(self.path)
        if run.pretrained.exists() or run.pretrained_info.exists():
            return "pre-training"
        if RunDir(self.path).model_final.exists() or self.evals:
            return "fine-tuning"
        return "other"

    def config_value(self, dotted: str) -> Any:
        """``config_value("data.train_ann")``; None when a level is missing."""
        node: Any = self.config
        for key in dotted.split("."):
            if not isinstance(node, dict) or key not in node:
                return None
            node = node[key]
        return node

    def config_path(self, dotted: str) -> Path | None:
        """A path from the config that exists: as written (cwd-relative), else run-relative."""
        value = self.config_value(dotted)
        if not value:
            return None
        for cand in (Path(str(value)), self.path / str(value)):
            if cand.exists():
                return cand
        return None


def parse_run_spec(spec: str) -> tuple[str, Path]:
    """``"NAME=DIR"`` or ``"DIR"`` -> (display name, folder); a DIR holding "=" still works."""
    if "=" in spec and not Path(spec).exists():
        name, _, path = spec.partition("=")
        if not name or not path:
            raise ValueError(f"run '{spec}': expected DIR or NAME=DIR")
        return name, Path(path)
    path = Path(spec)
    return path.resolve().name or str(path), path


def check_run_dir(name: str, path: Path) -> None:
    """Raise ValueError naming the run when ``path`` is not a run folder."""
    if not path.exists():
        raise ValueError(f"run '{name}': folder {path} does not exist")
    if not path.is_dir():
        raise ValueError(f"run '{name}': {path} is not a folder")
    if not any((path / m).exists() for m in RUN_MARKERS):
        raise ValueError(
            f"run '{name}': {path} is not a drcl run folder (none of {', '.join(RUN_MARKERS)})"
        )


def _slug(name: str, taken: set[str]) -> str:
    base = re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("._") or "run"
    slug, k = base, 2
    while slug in taken:
        slug, k = f"{base}_{k}", k + 1
    taken.add(slug)
    return slug


def _read_config(path: Path) -> dict[str, Any]:
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        raise ValueError(f"{path}: invalid YAML: {err}") from err
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a mapping at the top level")
    return data


def load_run(name: str, path: Path, taken_slugs: set[str]) -> RunInfo:
    """Read what a run folder holds; unreadable files go to ``problems``, never raise."""
    run = RunInfo(name=name, path=path, slug=_slug(name, taken_slugs))
    files = RunDir(path)
    readers = [("config", files.config, _read_config)]
    readers.append(("metrics", files.metrics, read_metrics))
    readers += [(t, files.eval_metrics(t), read_json) for t in IOU_TYPES]
    for what, file, reader in readers:
        if not file.exists():
            continue
        try:
            value = reader(file)
        except (OSError, ValueError, UnicodeDecodeError) as err:
            run.problems[what] = str(err)
            continue
        if what == "config":
            run.config = value
        elif what == "metrics":
            run.metrics = value
        elif isinstance(value, dict):
            run.evals[what] = value
        else:
            run.problems[what] = f"{file}: expected a json object"
    return run


def metric_value(metrics: dict[str, Any], key: str) -> float | None:
    """A metric in percent, or None when absent / not computable (-1, NaN, null).

    Metric files hold either fractions (COCO/LVIS eval's native 0..1) or percents; a file whose
    AP-like values are all <= 1 is taken as fractions and scaled by 100.
    """
    v = metrics.get(key)
    if not isinstance(v, int | float) or isinstance(v, bool) or not math.isfinite(v) or v < 0:
        return None
    return float(v) * metrics_scale(metrics)


def metrics_scale(metrics: dict[str, Any]) -> float:
    """100 when the file's AP values are fractions, else 1 (see :func:`metric_value`)."""
    values = [
        v
        for k, v in metrics.items()
        if k.startswith("AP") and isinstance(v, int | float) and math.isfinite(v) and v >= 0
    ]
    return 100.0 if values and max(values) <= 1.0 else 1.0
