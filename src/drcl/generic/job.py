"""The job of the generic backbone stage (``drcl pretrain-generic``, the ablation's and the
demo's generic backbone): its recipe, checked once (:meth:`GenericJob.from_config`), and its run
folder.

The stage has no root config of its own: its config is the recipe (:class:`GenericRecipe`: the
``generic:`` section of an ablation file, or the command line's options).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from drcl.config import ConfigError
from drcl.generic.recipe import GenericRecipe

__all__ = ["WEIGHTS", "GenericJob"]

WEIGHTS = "generic.safetensors"  # RUN/generic.safetensors (+ generic.json: recipe, accuracy)

DEPTHS = (18, 34, 50, 101)
OPTIMIZERS = ("sgd", "adamw")
HEADS = ("classes", "factors")
# key -> smallest allowed value (sizes, counts, lr)
MINIMUM = {"image_size": 16, "train_per_class": 1, "val_per_class": 1, "iters": 1, "batch_size": 1}


@dataclass(frozen=True)
class GenericJob:
    """Make the generic backbone of ``recipe`` in ``work_dir``.

    Attributes:
        recipe: the data size and the supervised classification schedule (a copy).
        work_dir: ``data/`` (the generated set), ``generic.safetensors``, ``generic.json``,
            ``cost.json``.
    """

    recipe: GenericRecipe
    work_dir: Path

    @classmethod
    def from_config(cls, recipe: Any, work_dir: str | os.PathLike) -> GenericJob:
        """The job of ``recipe`` (a :class:`GenericRecipe`, or the ``generic`` node of a loaded
        ablation file).

        Raises:
            ConfigError: a value out of range, named ``generic.KEY``.
        """
        copy = GenericRecipe(**{f.name: getattr(recipe, f.name) for f in fields(GenericRecipe)})
        _check(copy)
        return cls(recipe=copy, work_dir=Path(work_dir))

    @property
    def weights(self) -> Path:
        """``RUN/generic.safetensors``: the ResNet, torchvision keys (``model.weights=PATH``)."""
        return self.work_dir / WEIGHTS


def _check(recipe: GenericRecipe) -> None:
    choices = {"depth": DEPTHS, "optimizer": OPTIMIZERS, "head": HEADS}
    for key, allowed in choices.items():
        if getattr(recipe, key) not in allowed:
            raise ConfigError(
                f"generic.{key}: got {getattr(recipe, key)!r}, allowed: "
                f"{', '.join(map(str, allowed))}"
            )
    for key, low in MINIMUM.items():
        if getattr(recipe, key) < low:
            raise ConfigError(f"generic.{key}: got {getattr(recipe, key)}, must be >= {low}")
    if not recipe.lr > 0 or recipe.weight_decay < 0:
        raise ConfigError(
            f"generic.lr must be > 0 and generic.weight_decay >= 0, got {recipe.lr} and "
            f"{recipe.weight_decay}"
        )
