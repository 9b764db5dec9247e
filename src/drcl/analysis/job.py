"""The job of ``drcl analyze attention`` (and the demo's attention maps): what the Grad-CAM
runner needs, read from the root config once (:meth:`AttentionJob.from_config`).

The other analyses (errors, weight norms, box composition of runs, the probe) take files and
keyword arguments, no config.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from drcl.config import Config, ConfigError, job_section
from drcl.config.schema import DataConfig, FinetuneConfig, ModelConfig

__all__ = ["AttentionJob"]

DEFAULT_LAYER = "backbone.fpn"


@dataclass(frozen=True)
class AttentionJob:
    """Grad-CAM maps of named detector checkpoints on some images.

    Attributes:
        data: ``data.*`` (read-only): the detector's resize (``min_size`` / ``max_size``).
        model: ``model.*``: the ResNet-FPN the checkpoints were trained with.
        finetune: ``finetune.*``: the detector.
        runs: ``{name: checkpoint}``, one column each.
        image_ids: images of ``ann``, one row each.
        out: folder for ``attention.png/.npz/.json``.
        ann: annotation json holding the images (``--ann``, else ``data.val_ann``).
        image_dir: their folder (``--image-dir``, else ``data.val_images``).
        category_id: class to explain; None: each image's largest object.
        layer: ``backbone.fpn[:level]`` or a module name.
        device: torch device.
        config_name: the config file, recorded in ``attention.json``.
    """

    data: DataConfig
    model: ModelConfig
    finetune: FinetuneConfig
    runs: dict[str, str]
    image_ids: tuple[int, ...]
    out: Path
    ann: str
    image_dir: str
    category_id: int | None = None
    layer: str = DEFAULT_LAYER
    device: str = "cpu"
    config_name: str | None = None

    @classmethod
    def from_config(
        cls,
        cfg: Config,
        runs: dict[str, str],
        image_ids: list[int] | tuple[int, ...],
        out: str | os.PathLike,
        *,
        ann: str | None = None,
        image_dir: str | None = None,
        category_id: int | None = None,
        layer: str = DEFAULT_LAYER,
        device: str = "cpu",
        config_name: str | None = None,
    ) -> AttentionJob:
        """The job of ``cfg`` (a fine-tuning run's config).

        Raises:
            ConfigError: no checkpoint or no image; ``data.val_ann`` / ``data.val_images``
                unset while ``ann`` / ``image_dir`` are not given (named).
        """
        if not runs or not image_ids:
            raise ConfigError("analyze attention: give at least one checkpoint and one image id")
        required = tuple(
            key for key, given in (("val_ann", ann), ("val_images", image_dir)) if not given
        )
        data = job_section(cfg, "data", required)
        return cls(
            data=data,
            model=job_section(cfg, "model"),
            finetune=job_section(cfg, "finetune"),
            runs=dict(runs),
            image_ids=tuple(int(i) for i in image_ids),
            out=Path(out),
            ann=ann or data.val_ann,
            image_dir=image_dir or data.val_images,
            category_id=category_id,
            layer=layer,
            device=device,
            config_name=config_name,
        )
