"""The pre-training runner: ``drcl pretrain`` on a :class:`~drcl.pretrain.job.PretrainJob`.

It builds the stage's model (2DRCL here, the box stage's in :mod:`drcl.pretrain.box.runner`)
from the job's sections and runs the shared loop of :mod:`drcl.pretrain.loop`, which trains and
exports the backbone + FPN + box head weights. The root config is read only by
:meth:`PretrainJob.from_config`.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from drcl.config.schema import ModelConfig, PretrainConfig
from drcl.engine.setup import start_run
from drcl.pretrain.job import PretrainJob
from drcl.pretrain.loop import train_and_export
from drcl.utils.io import atomic_write_text
from drcl.utils.run_dir import RunDir

if TYPE_CHECKING:
    from drcl.models.drcl import DRCLModel


class DRCLSpec(Protocol):
    """What builds the 2DRCL model: ``model.*`` and ``pretrain.*`` (a :class:`PretrainJob`, or
    a loaded config in tests and notebooks)."""

    @property
    def model(self) -> ModelConfig: ...
    @property
    def pretrain(self) -> PretrainConfig: ...


def run_pretrain(job: PretrainJob) -> Path:
    """Pre-train and write ``job.work_dir/pretrained.safetensors``; returns its path.

    ``pretrain.stage: box`` trains the box-domain model (:mod:`drcl.pretrain.box.runner`) with
    the same loop."""
    env = start_run(job.train, job.work_dir)
    if env.dist.is_main:
        atomic_write_text(RunDir(env.work_dir).config, job.config_yaml)
    if job.stage == "box":
        from drcl.pretrain.box.runner import build_box_model as build
    else:
        build = build_drcl_model
    return train_and_export(job.loop_job(), env, job.resume, lambda: build(job))


def build_drcl_model(spec: DRCLSpec) -> DRCLModel:
    """The 2DRCL model of ``model.*`` and ``pretrain.*``."""
    from drcl.models.drcl import DRCLModel

    m, p = spec.model, spec.pretrain
    return DRCLModel(
        depth=m.depth,
        fpn_channels=m.fpn_channels,
        box_head_dim=m.box_head_dim,
        norm=m.norm,
        trainable_layers=m.trainable_layers,
        weights=m.weights,
        hcl=p.hcl,
        lcl=p.lcl,
        ar=p.ar,
        sr=p.sr,
        ema=p.ema,
        checkpointing=p.checkpointing,
    )
