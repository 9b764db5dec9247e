"""The images ``drcl predict`` runs on: a folder of any format Pillow reads, or an annotation file.

Decoding is the training data's own (:func:`drcl.data.dataset.read_image_rgb`): EXIF orientation
applied, greyscale / palette / RGBA / CMYK / 16-bit converted to RGB float in [0, 1], so a
checkpoint sees the same pixels here as in its evaluation. An image that cannot be read does not
stop the run: the dataset returns ``None`` with the reason, and :func:`collate_readable` sets it
aside so that the caller can name it and count it.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from PIL import Image

from drcl.data.coco import CocoIndex
from drcl.data.dataset import read_image_rgb
from drcl.data.paths import image_path, image_relpath


@dataclass(frozen=True)
class ImageItem:
    """One input image.

    Attributes:
        image_id: the id written into the results (the json's, or 1..N in folder order).
        path: the file.
        file_name: its path relative to the image folder (names drawings and messages).
        size: ``(height, width)`` that the annotation file gives, checked after decoding; None
            for a plain folder.
    """

    image_id: int
    path: Path
    file_name: str
    size: tuple[int, int] | None = None


@dataclass(frozen=True)
class Failure:
    """An image that could not be read, and why."""

    file_name: str
    reason: str


def image_extensions() -> set[str]:
    """Lower-case suffixes of every format Pillow can open (``.jpg``, ``.png``, ``.tif``, ...)."""
    return {ext.lower() for ext, fmt in Image.registered_extensions().items() if fmt in Image.OPEN}


def images_in_folder(folder: str | os.PathLike) -> list[ImageItem]:
    """Image files under ``folder`` (recursively, hidden files skipped), sorted by path.

    Ids are 1..N in that order. Files whose suffix no Pillow plugin claims are not images and
    are left out; a file with an image suffix that does not decode fails later, by name.

    Raises:
        ValueError: ``folder`` is not a folder, or holds no image file.
    """
    root = Path(folder)
    if not root.is_dir():
        raise ValueError(f"--images {root}: not a folder")
    exts = image_extensions()
    files = sorted(
        p
        for p in root.rglob("*")
        if p.suffix.lower() in exts
        and p.is_file()
        and not any(part.startswith(".") for part in p.relative_to(root).parts)
    )
    if not files:
        raise ValueError(f"--images {root}: no image files in it (any format Pillow reads)")
    return [ImageItem(k, p, p.relative_to(root).as_posix()) for k, p in enumerate(files, 1)]


def images_of_annotation(ann: str | os.PathLike, images_dir: str | os.PathLike) -> list[ImageItem]:
    """The images of a COCO / LVIS json, in json order, with the sizes it states.

    Raises:
        ValueError: the json cannot be read, lists no image, or a ``file_name`` leaves the folder.
    """
    index = CocoIndex.from_file(ann)
    if not Path(images_dir).is_dir():
        raise ValueError(f"--images {images_dir}: not a folder")
    items = []
    for iid in index.image_ids:
        rec = index.images[iid]
        path = image_path(images_dir, rec, f"{ann}: image {iid}")
        has_size = "height" in rec and "width" in rec
        size = (int(rec["height"]), int(rec["width"])) if has_size else None
        items.append(ImageItem(int(iid), path, image_relpath(rec), size))
    if not items:
        raise ValueError(f"{ann}: lists no images")
    return items


class ImageListDataset(torch.utils.data.Dataset):
    """``items[i]`` -> ``(image (3, H, W) float [0, 1] | None, info)``.

    ``info`` holds ``image_id`` and ``index``, plus ``error`` (a one-line reason) when the
    image could not be read or its size differs from the annotation file's.
    """

    def __init__(self, items: list[ImageItem]):
        self.items = items

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> tuple[torch.Tensor | None, dict[str, Any]]:
        item = self.items[i]
        info: dict[str, Any] = {"image_id": item.image_id, "index": i}
        if not item.path.is_file():
            return None, {**info, "error": "file not found"}
        try:
            image = read_image_rgb(item.path)
        except (OSError, RuntimeError, SyntaxError, ValueError) as err:
            return None, {**info, "error": f"cannot decode: {err}".strip()}
        if item.size is not None and tuple(image.shape[1:]) != item.size:
            reason = f"decoded size {tuple(image.shape[1:])} (h, w, EXIF applied) differs "
            return None, {**info, "error": reason + f"from the json's {item.size}"}
        return image, info


def collate_readable(
    batch: list[tuple[torch.Tensor | None, dict[str, Any]]],
) -> tuple[list[torch.Tensor], list[dict[str, Any]], list[dict[str, Any]]]:
    """``(images, infos, failed infos)``: unreadable samples are set aside, not batched."""
    ok = [(img, info) for img, info in batch if img is not None]
    failed = [info for img, info in batch if img is None]
    return [img for img, _ in ok], [info for _, info in ok], failed
