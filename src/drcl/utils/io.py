"""Atomic file writes: write a temporary file in the same folder, fsync, then rename."""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any


def atomic_write(path: str | os.PathLike, write: Callable[[str], None]) -> Path:
    """Call ``write(tmp_path)`` then rename onto ``path``; nothing half-written is left behind."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        write(tmp)
        with open(tmp, "rb+") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    def _write(tmp: str) -> None:
        Path(tmp).write_text(text)

    return atomic_write(path, _write)


def atomic_write_json(path: str | os.PathLike, obj: Any, indent: int | None = None) -> Path:
    return atomic_write_text(path, json.dumps(obj, indent=indent))


def read_json(path: str | os.PathLike) -> Any:
    """Read json, turning a decode error into a message that names the file and position."""
    path = Path(path)
    if path.is_dir():
        raise ValueError(f"{path}: is a folder, expected a json file")
    try:
        with open(path) as fh:
            return json.load(fh)
    except UnicodeDecodeError as err:
        raise ValueError(f"{path}: not a text (UTF-8) json file: {err.reason}") from err
    except json.JSONDecodeError as err:
        raise ValueError(
            f"{path}: invalid JSON at line {err.lineno} column {err.colno}: {err.msg}"
        ) from err


def ensure_writable_dir(path: str | os.PathLike) -> Path:
    """Create ``path`` and prove it is writable (fails before training starts, not after)."""
    path = Path(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path, prefix=".write-test-"):
            pass
    except OSError as err:
        raise ValueError(f"work dir {path} is not writable: {err.strerror or err}") from err
    return path
