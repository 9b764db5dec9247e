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


def image_relpath(image: dict) -> str:
    """The path of an image record relative to the image root.

    ``file_name`` when the record has one (COCO, COCO-LT, LVIS v0.5, our demo data). LVIS v1
    records carry only ``coco_url``; as in detectron2's ``lvis.py``, the path is then the URL's
    last two parts, ``<split folder>/<file>`` (``http://images.cocodataset.org/val2017/
    000000397133.jpg`` -> ``val2017/000000397133.jpg``), so one COCO 2017 root serves both the
    train and the val json.

    Raises:
        ValueError: neither field is a usable string (naming the image id).
    """
    name = image.get("file_name")
    if name is not None:
        return name
    url = image.get("coco_url")
    if not isinstance(url, str) or "/" not in url.rstrip("/"):
        raise ValueError(
            f"image {image.get('id')!r}: needs 'file_name' or a 'coco_url' ending in "
            f"<split folder>/<file>, got coco_url={url!r}"
        )
    return "/".join(url.rstrip("/").split("/")[-2:])


def image_path(root: str | os.PathLike, image: dict, record: str = "") -> Path:
    """``root / image_relpath(image)``, refusing paths that leave ``root`` (see ``safe_join``)."""
    try:
        rel = image_relpath(image)
    except ValueError as err:
        raise ValueError(f"{record}: {err}" if record else str(err)) from None
    return safe_join(root, rel, record)
