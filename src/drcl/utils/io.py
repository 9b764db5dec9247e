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


def check_output_file(path: str | os.PathLike, what: str = "--out") -> Path:
    """Prove that a file can be written at ``path`` *before* any work is done.

    Refuses a path that is an existing folder, whose parent is a file, or whose folder cannot be
    created or written to. Creates missing parent folders (as the atomic writers do); writes and
    removes a probe file next to the target, so an existing target is left untouched.

    Raises:
        ValueError: one line naming ``what`` and the path.
    """
    path = Path(path)
    if path.is_dir():
        raise ValueError(f"{what} {path}: is a folder, expected a file path")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path.parent, prefix=".write-test-"):
            pass
    except OSError as err:
        raise ValueError(f"{what} {path}: cannot write there: {err.strerror or err}") from None
    return path


def check_output_dir(path: str | os.PathLike, what: str = "--out") -> Path:
    """Like ``ensure_writable_dir`` but naming the option: refuses an existing file."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise ValueError(f"{what} {path}: is a file, expected a folder")
    try:
        return ensure_writable_dir(path)
    except ValueError as err:
        raise ValueError(f"{what} {path}: {str(err).split(': ', 1)[-1]}") from None
