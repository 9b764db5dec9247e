"""Checkpoints: atomic writes, sha256 sidecars, fallback to the last good one, safe loading.

A checkpoint ``ckpt_0001200.pt`` is written to a temporary file and renamed; its sha256 goes to
``ckpt_0001200.pt.sha256`` (written after the rename, so a checkpoint without a matching sidecar
is never trusted). Loading uses ``torch.load(weights_only=True)``: no arbitrary code runs.
"""

from __future__ import annotations

import hashlib
import logging
import re
from pathlib import Path
from typing import Any

import torch

from drcl.utils.errors import DiskFullError, UserError
from drcl.utils.io import atomic_write, atomic_write_text

log = logging.getLogger(__name__)

_NAME = re.compile(r"^ckpt_(\d{7})\.pt$")


class CheckpointError(UserError, RuntimeError):
    """A checkpoint that is missing, corrupted, unsafe to load, or does not fit the model."""


def sha256_of(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def save_checkpoint(
    state: dict[str, Any], work_dir: str | Path, iteration: int, keep: int = 2
) -> Path:
    """Write ``state`` as ``work_dir/ckpt_{iteration}.pt`` atomically, then prune old ones."""
    path = Path(work_dir) / f"ckpt_{iteration:07d}.pt"
    try:
        atomic_write(path, lambda tmp: torch.save(state, tmp))
        atomic_write_text(f"{path}.sha256", sha256_of(path) + "\n")
    except DiskFullError as err:  # nothing partial is left; the previous checkpoint is kept
        Path(f"{path}.sha256").unlink(missing_ok=True)
        raise DiskFullError(
            f"{err} (checkpoint of iteration {iteration})",
            hint=f"free space, then `--resume` continues {work_dir} from its last good checkpoint",
        ) from err
    if keep > 0:
        for old in list_checkpoints(work_dir)[:-keep]:
            old.unlink(missing_ok=True)
            Path(f"{old}.sha256").unlink(missing_ok=True)
    return path


def list_checkpoints(work_dir: str | Path) -> list[Path]:
    """Checkpoints in ``work_dir``, oldest first."""
    work_dir = Path(work_dir)
    if not work_dir.is_dir():
        return []
    return sorted(p for p in work_dir.iterdir() if _NAME.match(p.name))


def verify(path: Path) -> bool:
    side = Path(f"{path}.sha256")
    if not side.is_file():
        return False
    return side.read_text().strip() == sha256_of(path)


def load_state(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load a checkpoint without unpickling code (``weights_only=True``)."""
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except Exception as err:  # torch raises UnpicklingError or RuntimeError variants
        raise CheckpointError(f"{path}: refused or unreadable checkpoint: {err}") from err


def load_into(module: torch.nn.Module, state: dict[str, Any], path: str | Path) -> None:
    """``module.load_state_dict(state)``; a checkpoint of another model shape is a
    :class:`CheckpointError` naming the first mismatching key, not torch's page of them."""
    try:
        module.load_state_dict(state)
    except RuntimeError as err:
        lines = [ln.strip() for ln in str(err).splitlines()[1:] if ln.strip()]
        first = lines[0] if lines else str(err).splitlines()[0]
        raise CheckpointError(
            f"{path}: does not fit this model ({first[:300]})",
            hint="the run's model or data changed since the checkpoint was written (e.g. "
            "model.* or the number of categories); resume with the run's own config, or "
            "start a new --work-dir",
        ) from None


def latest_good_checkpoint(work_dir: str | Path) -> Path | None:
    """Newest checkpoint whose sha256 matches; warns about each corrupted one skipped."""
    for path in reversed(list_checkpoints(work_dir)):
        if verify(path):
            return path
        log.warning(
            "%s: checksum missing or wrong (truncated or corrupted); falling back to an "
            "earlier checkpoint",
            path,
        )
    return None
