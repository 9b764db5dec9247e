"""The job of ``drcl proposals``: the boxes to pre-train on, read from the root config once
(:meth:`ProposalsJob.from_config`).

For ``source=detector`` the job carries the class-agnostic detector's fine-tuning job, derived
from the same root config with :func:`drcl.config.derive_config` (:func:`detector_changes`): the
proposal stage runs the fine-tuning stage's runner on it, never its internals.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from drcl.config import Config, ConfigError, derive_config, job_section
from drcl.config.schema import DataConfig, ProposalConfig
from drcl.finetune.job import FinetuneJob

__all__ = ["AGNOSTIC_ANN", "ProposalsJob", "detector_changes", "detector_dir"]

# the training json with one class, written into the detector's run folder
AGNOSTIC_ANN = "train_class_agnostic.json"


def detector_dir(out: str | os.PathLike) -> Path:
    """The proposal detector's run folder next to ``out``: ``OUT.detector/``."""
    out = Path(out)
    return out.parent / f"{out.stem}.detector"


def detector_changes(p: ProposalConfig, agnostic_ann: str | os.PathLike) -> dict[str, Any]:
    """How the class-agnostic detector's fine-tuning config differs from the pre-training one:
    its one-class training file, its length (``detector_epochs`` epochs, else
    ``detector_iters`` iterations) and its test settings (``top_n`` boxes, ``nms``,
    ``score_thresh``).

    Raises:
        ConfigError: ``pretrain.proposals.detector_epochs`` < 0 or ``detector_iters`` < 1.
    """
    if p.detector_epochs < 0 or p.detector_iters < 1:
        raise ConfigError(
            "pretrain.proposals: detector_epochs must be >= 0 and detector_iters >= 1, got "
            f"{p.detector_epochs} and {p.detector_iters}"
        )
    if p.detector_epochs > 0:  # dataset-proportional: the engine turns epochs into iterations
        # checkpoint_every 0: once per epoch
        length = {"train.max_iters": 0, "train.epochs": p.detector_epochs}
        length["train.checkpoint_every"] = 0
    else:
        length = {"train.max_iters": p.detector_iters, "train.checkpoint_every": p.detector_iters}
    return {
        "data.train_ann": str(agnostic_ann),
        **length,
        "finetune.arch": "faster_rcnn",
        "finetune.loss": "ce",
        "finetune.rfs": False,
        "finetune.score_thresh": p.score_thresh,
        "finetune.nms_thresh": p.nms,
        "finetune.detections_per_img": p.top_n,
    }


@dataclass(frozen=True)
class ProposalsJob:
    """Write the proposals of ``proposals.source`` to ``out``.

    Attributes:
        data: ``data.*`` (read-only): the training file (and images, for the detector).
        proposals: ``pretrain.proposals.*``: source, file, detector budget, top-N, NMS.
        out: the proposals json.
        clean_detector: delete the detector's run folder once the proposals are written.
        detector: ``source=detector``: the fine-tuning job of the class-agnostic detector
            (in :func:`detector_dir` ``(out)``, resumed, not evaluated); else None.
    """

    data: DataConfig
    proposals: ProposalConfig
    out: Path
    clean_detector: bool = False
    detector: FinetuneJob | None = None

    @classmethod
    def from_config(
        cls, cfg: Config, out: str | os.PathLike, clean_detector: bool = False
    ) -> ProposalsJob:
        """The job of ``cfg`` (a pre-training config) writing ``out``.

        Raises:
            ConfigError: ``data.train_ann`` unset; ``source=file`` without
                ``pretrain.proposals.file``; a detector budget out of range (each named).
        """
        p, out = cfg.pretrain.proposals, Path(out)
        detector = None
        if p.source == "file" and not p.file:
            raise ConfigError("pretrain.proposals.source=file needs pretrain.proposals.file")
        if p.source == "detector":
            agnostic = detector_dir(out) / AGNOSTIC_ANN
            detector = FinetuneJob.from_config(
                derive_config(cfg, detector_changes(p, agnostic)),
                detector_dir(out),
                resume=True,
                stage="proposal_detector",
                evaluate=False,
            )
        return cls(
            data=job_section(cfg, "data", ("train_ann",)),
            proposals=job_section(cfg, "pretrain.proposals"),
            out=out,
            clean_detector=clean_detector,
            detector=detector,
        )
