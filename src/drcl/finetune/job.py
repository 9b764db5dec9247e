"""The jobs of the fine-tuning runner: what ``drcl finetune`` and ``drcl evaluate --checkpoint``
need, read from the root config once (:meth:`FinetuneJob.from_config`,
:meth:`EvaluateJob.from_config`) and frozen.

An orchestrator (``drcl ablate``, ``drcl demo``, the proposal detector) derives the stage's
config with :func:`drcl.config.derive_config` (or loads it with its overrides) and turns it into
a job here; it never edits a config the runner reads afterwards.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from drcl.config import Config, ConfigError, config_text, job_section
from drcl.config.schema import (
    ARCH_FAMILIES,
    DataConfig,
    FinetuneConfig,
    ModelConfig,
    TrainConfig,
)

__all__ = ["DetectorSpec", "EvalSpec", "EvaluateJob", "FinetuneJob", "iou_types_of"]

TRAIN_DATA = ("train_ann", "train_images")
VAL_DATA = ("val_ann", "val_images")


class DetectorSpec(Protocol):
    """What builds a detector: ``finetune.arch`` on ``model.*`` at ``data.min_size``/``max_size``
    (a job of this module, or the analysis' attention job)."""

    @property
    def data(self) -> DataConfig: ...
    @property
    def model(self) -> ModelConfig: ...
    @property
    def finetune(self) -> FinetuneConfig: ...


class EvalSpec(DetectorSpec, Protocol):
    """What evaluates a detector: the detector's sections and the device (``train.device``)."""

    @property
    def device(self) -> str: ...


def iou_types_of(arch: str) -> tuple[str, ...]:
    """Box AP always; mask AP too for a detector with masks (``finetune.arch``)."""
    return ("bbox", "segm") if ARCH_FAMILIES[arch].masks else ("bbox",)


def check_iou_types(arch: str, iou_types: tuple[str, ...] | list[str]) -> None:
    """Refuse an IoU type the detector of ``finetune.arch`` cannot be evaluated on."""
    unknown = [t for t in iou_types if t not in ("bbox", "segm")]
    if unknown:
        raise ValueError(f"iou_type {unknown[0]!r}: allowed bbox, segm")
    if "segm" in iou_types and not ARCH_FAMILIES[arch].masks:
        raise ValueError("iou_type 'segm' needs finetune.arch=mask_rcnn")


@dataclass(frozen=True)
class FinetuneJob:
    """One fine-tuning run: train the detector of ``finetune.arch`` into ``work_dir`` and, with
    ``evaluate``, evaluate it on ``data.val_ann`` into ``work_dir/eval``.

    Attributes:
        data: ``data.*`` (read-only): training and validation files, loading, groups.
        model: ``model.*``: the ResNet-FPN.
        train: ``train.*``: optimisation and the engine.
        finetune: ``finetune.*``: the detector, its losses, RFS, test settings.
        work_dir: the run folder.
        init: pre-trained weights (``--init``, else ``finetune.init``); None: none.
        resume: continue the run in ``work_dir`` from its latest good checkpoint.
        stage: the ``stage`` field of ``cost.json`` (``finetune``, ``proposal_detector``, ...).
        evaluate: evaluate on ``data.val_ann`` after training.
        config_yaml: the resolved root config, written as ``RUN/config.yaml``.
    """

    data: DataConfig
    model: ModelConfig
    train: TrainConfig
    finetune: FinetuneConfig
    work_dir: Path
    init: str | None = None
    resume: bool = False
    stage: str = "finetune"
    evaluate: bool = True
    config_yaml: str = ""

    @classmethod
    def from_config(
        cls,
        cfg: Config,
        work_dir: str | os.PathLike,
        *,
        init: str | None = None,
        resume: bool = False,
        stage: str = "finetune",
        evaluate: bool = True,
    ) -> FinetuneJob:
        """The job of ``cfg`` (a loaded fine-tuning config) into ``work_dir``.

        Raises:
            ConfigError: a data path the run reads is unset (named ``data.KEY``), or ``stage``
                is empty.
        """
        if not stage:
            raise ConfigError("fine-tuning job: stage (cost.json's 'stage') must not be empty")
        required = TRAIN_DATA + (VAL_DATA if evaluate else ())
        init = init or cfg.finetune.init
        return cls(
            data=job_section(cfg, "data", required),
            model=job_section(cfg, "model"),
            train=job_section(cfg, "train"),
            finetune=job_section(cfg, "finetune"),
            work_dir=Path(work_dir),
            init=None if init is None else str(init),
            resume=resume,
            stage=stage,
            evaluate=evaluate,
            config_yaml=config_text(cfg),
        )

    @property
    def device(self) -> str:
        """``train.device``: where training and the evaluation run."""
        return str(self.train.device)

    @property
    def iou_types(self) -> tuple[str, ...]:
        """What its evaluation measures (:func:`iou_types_of` ``finetune.arch``)."""
        return iou_types_of(self.finetune.arch)


@dataclass(frozen=True)
class EvaluateJob:
    """LVIS-style evaluation of a detector checkpoint on ``data.val_ann`` into ``out_dir``.

    Attributes:
        data: ``data.*`` (read-only): the validation files, ``train_ann`` for the groups.
        model: ``model.*``: the ResNet-FPN the checkpoint was trained with.
        finetune: ``finetune.*``: the detector and its test settings.
        device: ``train.device``.
        checkpoint: the detector's weights (safetensors, or a training checkpoint).
        out_dir: where detections and ``metrics_<iou_type>.json`` go.
        iou_types: ``bbox`` and/or ``segm`` (default: :func:`iou_types_of` the arch).
    """

    data: DataConfig
    model: ModelConfig
    finetune: FinetuneConfig
    device: str
    checkpoint: Path
    out_dir: Path
    iou_types: tuple[str, ...]

    @classmethod
    def from_config(
        cls,
        cfg: Config,
        checkpoint: str | os.PathLike,
        out_dir: str | os.PathLike,
        iou_types: tuple[str, ...] | list[str] | None = None,
    ) -> EvaluateJob:
        """The job of ``cfg`` (the run's config) for ``checkpoint``.

        Raises:
            ConfigError: ``data.val_ann`` or ``data.val_images`` is unset (named).
            ValueError: an IoU type ``finetune.arch`` cannot give (``segm`` without masks).
        """
        types = iou_types_of(cfg.finetune.arch) if iou_types is None else tuple(iou_types)
        check_iou_types(cfg.finetune.arch, types)
        return cls(
            data=job_section(cfg, "data", VAL_DATA),
            model=job_section(cfg, "model"),
            finetune=job_section(cfg, "finetune"),
            device=str(cfg.train.device),
            checkpoint=Path(checkpoint),
            out_dir=Path(out_dir),
            iou_types=types,
        )
