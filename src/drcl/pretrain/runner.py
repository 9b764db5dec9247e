"""The pre-training runner: the one place that reads the root config for ``drcl pretrain``.

It turns the config into a :class:`~drcl.pretrain.loop.PretrainLoopJob` and the stage's model
(2DRCL here, the box stage's in :mod:`drcl.pretrain.box.runner`), and runs the shared loop of
:mod:`drcl.pretrain.loop`, which trains and exports the backbone + FPN + box head weights.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from drcl.config import Config, save_config, to_dict
from drcl.engine.setup import start_run
from drcl.pretrain.loop import PretrainLoopJob, train_and_export
from drcl.utils.run_dir import RunDir

if TYPE_CHECKING:
    from drcl.models.drcl import DRCLModel


def run_pretrain(cfg: Config, work_dir: str | Path, resume: bool = False) -> Path:
    """Pre-train and write ``work_dir/pretrained.safetensors``; returns its path.

    ``pretrain.stage: box`` trains the box-domain model (:mod:`drcl.pretrain.box.runner`) with
    the same loop."""
    env = start_run(cfg.train, work_dir)
    if env.dist.is_main:
        save_config(cfg, RunDir(env.work_dir).config)
    if cfg.pretrain.stage == "box":
        from drcl.pretrain.box.runner import build_box_model

        build, info = build_box_model, {"stage": "box", "init": cfg.pretrain.box.init}
    else:
        build, info = build_drcl_model, {"stage": "pretrain", "init": cfg.model.weights}
    job = PretrainLoopJob(
        cfg.data, cfg.train, cfg.pretrain, cfg.model.norm == "sync_bn", to_dict(cfg), info
    )
    return train_and_export(job, env, resume, lambda: build(cfg))


def build_drcl_model(cfg: Config) -> DRCLModel:
    """The 2DRCL model of ``model.*`` and ``pretrain.*``."""
    from drcl.models.drcl import DRCLModel

    m, p = cfg.model, cfg.pretrain
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
