"""Opening a run folder (``--work-dir``) without losing or mixing runs.

- A new run needs an empty or missing folder. A folder that holds anything is refused, unless
  ``--resume`` (continue that run) or ``--overwrite`` (its old contents are moved aside to
  ``DIR.old-<time>``, never mixed with the new run).
- ``--resume`` runs with the run's own ``config.yaml``; ``key=value`` overrides may change only
  what the checkpoint does not fix (logging, checkpoint frequency, workers, device, image
  folders: :data:`RESUMABLE_KEYS`; an annotation file's path when its bytes are the same). Every
  refusal happens before anything in the folder is written.
"""

from __future__ import annotations

import filecmp
import logging
import os
import time
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from drcl.config.loader import load_config
from drcl.config.schema import Config
from drcl.utils.errors import RunFolderError
from drcl.utils.io import refuse_overwriting_inputs
from drcl.utils.run_dir import RunDir

log = logging.getLogger(__name__)

# Keys a resumed run may change: none of them is fixed by the checkpoint (model shape, data,
# optimiser, schedule and sampler state are).
RESUMABLE_KEYS = (
    "train.log_every",
    "train.checkpoint_every",
    "train.keep_checkpoints",
    "train.device",
    "train.nonfinite",
    "data.num_workers",
    "data.on_error",
    "data.train_images",  # the same images, moved
    "data.val_images",
    "finetune.eval_batch_size",
    "finetune.init",  # initial weights: replaced by the checkpoint's
    "model.weights",
)


# File keys whose path may change on resume when the file's bytes do not (a moved dataset,
# another working directory for a relative path).
_FILE_KEYS = ("data.train_ann", "data.val_ann", "pretrain.proposals.file")


def _same_content(a: Any, b: Any) -> bool:
    try:
        return filecmp.cmp(str(a), str(b), shallow=False)
    except OSError:  # either is missing: a different file as far as we can tell
        return False


def _flat(cfg: Any) -> dict[str, Any]:
    """``{'train.lr': 0.02, ...}`` of a config (enums as their strings)."""
    out: dict[str, Any] = {}

    def walk(node: Any, prefix: str) -> None:
        if isinstance(node, dict):
            for k, v in node.items():
                walk(v, f"{prefix}{k}.")
        else:
            out[prefix[:-1]] = node

    walk(OmegaConf.to_container(cfg, resolve=True, enum_to_str=True), "")
    return out


def _differences(a: Config, b: Config) -> dict[str, tuple[Any, Any]]:
    fa, fb = _flat(a), _flat(b)
    return {k: (fa.get(k), fb.get(k)) for k in fa.keys() | fb.keys() if fa.get(k) != fb.get(k)}


def _listing(path: Path, n: int = 4) -> str:
    names = sorted(p.name for p in path.iterdir())
    more = f", ... ({len(names)} entries)" if len(names) > n else ""
    return ", ".join(names[:n]) + more


def move_aside(path: Path) -> Path:
    """Rename ``path`` to ``path.old-<YYYYmmdd-HHMMSS>`` (a suffix -2, -3 ... if taken)."""
    stamp = time.strftime("%Y%m%d-%H%M%S")
    target, k = path.with_name(f"{path.name}.old-{stamp}"), 1
    while target.exists():
        k += 1
        target = path.with_name(f"{path.name}.old-{stamp}-{k}")
    os.rename(path, target)
    return target


def prepare_run(
    config: str | os.PathLike | None,
    overrides: list[str],
    work_dir: str | os.PathLike,
    resume: bool = False,
    overwrite: bool = False,
    inputs: dict[str, Any] | None = None,
) -> Config:
    """Check ``work_dir`` for a new or resumed run and return the config to run with.

    Args:
        config: the CONFIG of the command line.
        overrides: its ``key=value`` overrides.
        work_dir: ``--work-dir``.
        resume: ``--resume``: run with ``work_dir/config.yaml`` + ``overrides``.
        overwrite: ``--overwrite``: move a non-empty ``work_dir`` aside first.
        inputs: other input paths (``{"--init": path}``), refused inside a folder to be moved.

    Raises:
        RunFolderError: a folder holding another run, an override a resume cannot honour,
            ``--resume`` with ``--overwrite``; nothing has been written then.
    """
    path = Path(work_dir)
    if path.exists() and not path.is_dir():
        raise RunFolderError(f"--work-dir {path}: is a file, expected a folder")
    if resume and overwrite:
        raise RunFolderError("--resume and --overwrite exclude each other")
    busy = path.is_dir() and any(path.iterdir())
    if resume and busy:
        return _resumed_config(config, overrides, path)
    cfg = load_config(config, overrides)
    if busy and not overwrite:
        raise RunFolderError(
            f"--work-dir {path} is not empty ({_listing(path)}); refusing to mix two runs",
            hint="continue that run with --resume, replace it with --overwrite (its contents "
            "are moved to a .old-<time> folder), or give a new --work-dir",
        )
    if busy:
        refuse_overwriting_inputs(
            path, {"CONFIG": config, **(inputs or {}), **_data_inputs(cfg)}, "--work-dir", True
        )
        old = move_aside(path)
        log.warning("--overwrite: the old contents of %s are now in %s", path, old)
    return cfg


def _data_inputs(cfg: Config) -> dict[str, Any]:
    d = cfg.data
    return {f"data.{k}": getattr(d, k) for k in ("train_ann", "val_ann") if not _missing(d, k)}


def _missing(node: Any, key: str) -> bool:
    return OmegaConf.is_missing(node, key)


def _resumed_config(config: str | os.PathLike | None, overrides: list[str], path: Path) -> Config:
    """The run's ``config.yaml`` with ``overrides`` that change only :data:`RESUMABLE_KEYS`."""
    saved = RunDir(path).config
    if not saved.is_file():
        raise RunFolderError(
            f"--work-dir {path} holds no config.yaml ({_listing(path)}): not a drcl run to resume",
            hint="give the run's folder, or a new --work-dir without --resume",
        )
    run_cfg = load_config(saved)
    cfg = load_config(saved, overrides)
    fixed = {
        k: (was, now)
        for k, (was, now) in _differences(run_cfg, cfg).items()
        if k not in RESUMABLE_KEYS and not (k in _FILE_KEYS and _same_content(was, now))
    }
    if fixed:
        key, (was, now) = sorted(fixed.items())[0]
        raise RunFolderError(
            f"--resume {path}: {key}={now!r} here, {was!r} in the run's config.yaml; "
            f"the checkpoint fixes it ({len(fixed)} such key{'s' if len(fixed) > 1 else ''}: "
            f"{', '.join(sorted(fixed))})",
            hint="drop the override to continue the run, or start a new --work-dir; a resumed "
            f"run may change only {', '.join(RESUMABLE_KEYS)}",
        )
    if config is not None and Path(config).resolve() != saved.resolve():
        ignored = sorted(_differences(run_cfg, load_config(config)))
        ignored = [k for k in ignored if k not in RESUMABLE_KEYS]
        if ignored:
            log.warning(
                "--resume: %s differs from the run's config.yaml in %s; the run's values are kept",
                config,
                ", ".join(ignored[:8]) + (" ..." if len(ignored) > 8 else ""),
            )
    log.info("resuming %s with its config.yaml", path)
    if not any(path.glob("ckpt_*.pt")):  # died before its first checkpoint (a full disk, a kill)
        stale = RunDir(path).metrics
        if stale.is_file():
            stale.unlink()
        log.warning("--resume: no checkpoint in %s yet; training starts at iteration 0", path)
    return cfg
