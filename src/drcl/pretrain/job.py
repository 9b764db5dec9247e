"""The job of the pre-training runner: what ``drcl pretrain`` needs (2DRCL, or the box-domain
stage with ``pretrain.stage: box``), read from the root config once
(:meth:`PretrainJob.from_config`) and frozen.

An orchestrator (``drcl ablate``, ``drcl demo``) derives the stage's config with
:func:`drcl.ablation.runner.pretrain_config` / ``box_stage_config`` and turns it into a job here;
the runner and the models read the job's sections, never the root config.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from drcl.config import Config, config_text, job_section, to_dict
from drcl.config.schema import DataConfig, FinetuneConfig, ModelConfig, PretrainConfig, TrainConfig
from drcl.pretrain.loop import PretrainLoopJob

__all__ = ["PretrainJob"]

TRAIN_DATA = ("train_ann", "train_images")


@dataclass(frozen=True)
class PretrainJob:
    """One pre-training run into ``work_dir``: 2DRCL, or the box-domain stage.

    Attributes:
        data: ``data.*`` (read-only): the training files and the loader.
        model: ``model.*``: the ResNet-FPN and its initial weights.
        train: ``train.*``: optimisation and the engine.
        pretrain: ``pretrain.*``: the method (HCL, LCL, DRB, AR, SR, EMA, proposals, box stage).
        finetune: ``finetune.*``: the RPN and RoI settings of the box stage's detector (it
            exports the RPN that fine-tuning will run); unused by 2DRCL.
        work_dir: the run folder.
        resume: continue the run in ``work_dir`` from its latest good checkpoint.
        config: the resolved root config as a dict (written beside the exported weights).
        config_yaml: the same as YAML, written as ``RUN/config.yaml``.
    """

    data: DataConfig
    model: ModelConfig
    train: TrainConfig
    pretrain: PretrainConfig
    finetune: FinetuneConfig
    work_dir: Path
    resume: bool = False
    config: dict[str, Any] = field(default_factory=dict)
    config_yaml: str = ""

    @classmethod
    def from_config(
        cls, cfg: Config, work_dir: str | os.PathLike, *, resume: bool = False
    ) -> PretrainJob:
        """The job of ``cfg`` (a loaded pre-training config) into ``work_dir``.

        Raises:
            ConfigError: a training data path is unset (named ``data.KEY``).
        """
        return cls(
            data=job_section(cfg, "data", TRAIN_DATA),
            model=job_section(cfg, "model"),
            train=job_section(cfg, "train"),
            pretrain=job_section(cfg, "pretrain"),
            finetune=job_section(cfg, "finetune"),
            work_dir=Path(work_dir),
            resume=resume,
            config=to_dict(cfg),
            config_yaml=config_text(cfg),
        )

    @property
    def stage(self) -> str:
        """``pretrain.stage``: ``image`` (2DRCL) or ``box`` (the box-domain stage)."""
        return str(self.pretrain.stage)

    def loop_job(self) -> PretrainLoopJob:
        """What the shared loop of :mod:`drcl.pretrain.loop` reads."""
        if self.stage == "box":
            info = {"stage": "box", "init": self.pretrain.box.init}
        else:
            info = {"stage": "pretrain", "init": self.model.weights}
        return PretrainLoopJob(
            self.data,
            self.train,
            self.pretrain,
            self.model.norm == "sync_bn",
            self.config,
            info,
        )
