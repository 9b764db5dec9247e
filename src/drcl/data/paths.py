"""Joining an image folder with a json ``file_name`` without letting the json escape the folder."""

from __future__ import annotations

import os
from pathlib import Path, PurePosixPath, PureWindowsPath


def safe_join(root: str | os.PathLike, file_name: str, record: str = "") -> Path:
    """``root / file_name``, refusing names that point outside ``root``.

    A json from elsewhere must not make us read ``/etc/passwd`` or ``../../secret``: absolute
    paths (POSIX or Windows, drive letters included), NUL bytes and ``..`` components that leave
    ``root`` are rejected. ``a/../b.png`` (stays inside) is allowed. Symlinks are not resolved, so
    an image folder made of links still works.

    Args:
        root: the image folder.
        file_name: the record's ``file_name``, relative to ``root``.
        record: what to name in the error, e.g. ``"train.json: image 12"``.

    Returns:
        The joined path.

    Raises:
        ValueError: naming the record and the offending file name.
    """
    where = f"{record}: " if record else ""
    if not isinstance(file_name, str) or not file_name:
        raise ValueError(f"{where}file_name must be a non-empty string, got {file_name!r}")
    if "\x00" in file_name:
        raise ValueError(f"{where}file_name {file_name!r} contains a NUL byte")
    win = PureWindowsPath(file_name)
    if PurePosixPath(file_name).is_absolute() or win.drive or win.root:
        raise ValueError(f"{where}file_name {file_name!r} is absolute; it must be relative")
    # normpath collapses "a/../b" lexically; anything still starting with ".." leaves root
    norm = os.path.normpath(file_name.replace("\\", "/"))
    if norm == ".." or norm.startswith("../") or norm == ".":
        raise ValueError(f"{where}file_name {file_name!r} escapes the image folder")
    return Path(root) / os.path.normpath(file_name)
