"""The pre-training dose of a grid: epochs of the training set turned into optimizer iterations.

The paper pre-trains for a 1x schedule, 90k iterations of 16 images on LVIS v1 train, about
14 epochs; our grids state the dose the same way, in epochs, so that it means the same thing
whatever the dataset size, batch and accumulation::

    iters(E) = ceil(E * iters_per_epoch(N, batch_size * accumulate))

with ``N`` the images of ``data.train_ann`` and ``iters_per_epoch(N, B) = ceil(N / B)`` (the
engine's). One optimizer iteration sees ``batch_size * accumulate`` images, so a run of
``iters(E)`` iterations sees at least ``E * N`` images (the last batch of an epoch is full).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from drcl.config import ConfigError
from drcl.config.schema import DataConfig, TrainConfig
from drcl.engine.schedule import total_iters
from drcl.engine.trainer import iters_per_epoch


@dataclass(frozen=True)
class Dose:
    """A pre-training length.

    Attributes:
        epochs: epochs of the training set.
        iters: optimizer iterations (``train.max_iters``).
        iters_per_epoch: optimizer iterations per epoch (``ceil(N / (batch * accumulate))``).
    """

    epochs: float
    iters: int
    iters_per_epoch: int


@lru_cache(maxsize=16)
def _count_images(path: str, mtime_ns: int) -> int:
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, ValueError) as err:
        raise ConfigError(f"data.train_ann: cannot read {path}: {err}") from err
    images = data.get("images") if isinstance(data, dict) else None
    if not isinstance(images, list):
        raise ConfigError(f"data.train_ann: {path} has no 'images' list")
    if not images:
        raise ConfigError(f"data.train_ann: {path} has no image; a dose in epochs needs some")
    return len(images)


def num_train_images(data: DataConfig) -> int:
    """Images listed in ``data.train_ann`` (read once per file version)."""
    path = Path(data.train_ann)
    if not path.is_file():
        raise ConfigError(f"data.train_ann: file not found: {path} (a dose in epochs needs it)")
    return _count_images(str(path.resolve()), path.stat().st_mtime_ns)


def optimizer_iters_per_epoch(data: DataConfig, train: TrainConfig) -> int:
    """Optimizer iterations per epoch of ``data.train_ann`` under ``train``."""
    images_per_iter = int(train.batch_size) * int(train.accumulate)
    return iters_per_epoch(num_train_images(data), images_per_iter)


def dose_in_epochs(data: DataConfig, train: TrainConfig, epochs: float) -> Dose:
    """``epochs`` of the training set as optimizer iterations of a pre-training recipe."""
    if not (epochs > 0 and math.isfinite(epochs)):
        raise ConfigError(f"pre-training dose: epochs must be > 0, got {epochs}")
    ipe = optimizer_iters_per_epoch(data, train)
    return Dose(float(epochs), max(1, math.ceil(epochs * ipe)), ipe)


def dose_of(data: DataConfig, train: TrainConfig) -> Dose:
    """The dose a pre-training recipe runs: ``train.max_iters`` (or ``train.epochs``) in epochs."""
    ipe = optimizer_iters_per_epoch(data, train)
    iters = total_iters(train, iters_per_epoch(num_train_images(data), train.batch_size))
    return Dose(round(iters / ipe, 3), int(iters), ipe)


def dose_overrides(
    data: DataConfig, train: TrainConfig, epochs: float | None, probe_every_epochs: float = 0.0
) -> list[str]:
    """Overrides that make a pre-training recipe run ``epochs`` epochs (None: as it is) and log
    the probe every ``probe_every_epochs`` epochs (0: leave ``pretrain.probe`` alone).

    Raises:
        ConfigError: a bad dose or unreadable training annotations.
    """
    out = []
    if epochs is not None:
        out.append(f"train.max_iters={dose_in_epochs(data, train, epochs).iters}")
    if probe_every_epochs < 0:
        raise ConfigError(f"probe_every_epochs must be >= 0, got {probe_every_epochs}")
    if probe_every_epochs > 0:
        every = max(1, round(probe_every_epochs * optimizer_iters_per_epoch(data, train)))
        out.append(f"pretrain.probe.every={every}")
    return out
