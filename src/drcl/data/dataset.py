"""COCO / LVIS detection dataset for torchvision detectors: image tensor + target dict.

``DetectionDataset`` reads images in json order and returns what torchvision's Faster / Mask R-CNN
take: ``image (3, H, W)`` float in [0, 1] RGB and ``target`` with ``boxes (N, 4)`` xyxy pixels,
``labels (N,)`` contiguous 1..C (``drcl.data.coco.contiguous_ids``), ``masks (N, H, W)`` uint8,
``image_id``, ``iscrowd (N,)`` and ``area (N,)``.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image, ImageOps
from torchvision.io import ImageReadMode, decode_image
from torchvision.ops import box_convert

from drcl.data.coco import CocoIndex
from drcl.data.paths import image_path, image_relpath

try:  # pycocotools is the reference; faster-coco-eval ships the same C API (a hard dependency)
    from pycocotools import mask as mask_utils
except ImportError:  # pragma: no cover - depends on the environment
    from faster_coco_eval.core import mask as mask_utils

Target = dict[str, Any]
Transform = Callable[[torch.Tensor, Target], tuple[torch.Tensor, Target]]

# PIL modes holding more than 8 bits per channel; scaled by their 16-bit range, not clipped at 255
_PIL_WIDE_MODES = ("I;16", "I;16L", "I;16B", "I;16N", "I")
_TV_DEPRECATION = "The image decoding and encoding capabilities of TorchVision"


class DataError(ValueError):
    """A broken image or record; the message names the file and the image / annotation id."""


@dataclass(frozen=True)
class SkippedSample:
    """One sample left out under ``on_error='skip'``."""

    image_id: int
    file: str
    reason: str


def _pil_to_tensor(img: Image.Image) -> torch.Tensor:
    """PIL image (any mode) -> (3, H, W) float32 in [0, 1], RGB."""
    img = ImageOps.exif_transpose(img)
    if img.mode in _PIL_WIDE_MODES:
        gray = np.asarray(img, dtype=np.float32) / 65535.0  # 16-bit grey, kept at full depth
        arr = np.repeat(np.clip(gray, 0.0, 1.0)[..., None], 3, axis=2)
    else:
        # "RGB" conversion handles L, LA, P (palette), RGBA (alpha dropped), CMYK, YCbCr
        arr = np.asarray(img.convert("RGB"), dtype=np.float32) / 255.0
    return torch.from_numpy(np.ascontiguousarray(arr.transpose(2, 0, 1)))


def read_image_rgb(path: str | os.PathLike) -> torch.Tensor:
    """Decode an image file with EXIF orientation applied.

    torchvision's decoder handles JPEG (CMYK too), PNG (palette, 16-bit), WebP, GIF; PIL takes
    the rest (TIFF, BMP, ...). Greyscale and alpha become RGB.

    Returns:
        (3, H, W) float32 in [0, 1].

    Raises:
        OSError / RuntimeError from the decoders when the file is unreadable or truncated.
    """
    try:
        with warnings.catch_warnings():
            # torchvision 0.29 flags its decoders as deprecated in favour of TorchCodec; they
            # remain the pinned standard here, so that notice is silenced (not thread-safe
            # global state, but DataLoader workers are processes)
            warnings.filterwarnings("ignore", _TV_DEPRECATION, DeprecationWarning)
            img = decode_image(str(path), mode=ImageReadMode.RGB, apply_exif_orientation=True)
    except RuntimeError:
        with Image.open(path) as pil:  # unsupported by torchvision, or broken: PIL decides
            pil.load()
            return _pil_to_tensor(pil)
    scale = np.float32(65535.0 if img.dtype == torch.uint16 else 255.0)
    # numpy, not torch ops: a small image is not worth torch's intra-op thread pool, which
    # costs milliseconds per call on a busy machine when loading in the main process
    return torch.from_numpy(img.numpy().astype(np.float32) / scale)


def segmentation_to_mask(segm: Any, height: int, width: int) -> np.ndarray:
    """COCO segmentation (polygons, uncompressed or compressed RLE) -> (H, W) uint8 in {0, 1}."""
    if isinstance(segm, list):  # polygons [[x1, y1, x2, y2, ...], ...]
        rle = mask_utils.merge(mask_utils.frPyObjects(segm, height, width))
    elif isinstance(segm, dict) and isinstance(segm.get("counts"), list):
        rle = mask_utils.frPyObjects(segm, height, width)  # uncompressed RLE
    elif isinstance(segm, dict):
        rle = dict(segm)
        if isinstance(rle["counts"], str):
            rle["counts"] = rle["counts"].encode("ascii")
    else:
        raise ValueError(f"unsupported segmentation of type {type(segm).__name__}")
    return np.asarray(mask_utils.decode(rle), dtype=np.uint8)


def collate(batch: list[tuple[torch.Tensor, Target]]) -> tuple[list[torch.Tensor], list[Target]]:
    """Detection batches keep images of different sizes apart: (list of images, list of targets)."""
    images, targets = zip(*batch, strict=True) if batch else ((), ())
    return list(images), list(targets)


class DetectionDataset(torch.utils.data.Dataset):
    """COCO / LVIS json + image folder as a torch ``Dataset``.

    Args:
        ann_file: COCO / LVIS json (or pass ``index`` to share an already loaded one).
        image_dir: folder that ``images[].file_name`` is relative to (or, for LVIS v1 records
            without it, the COCO root holding ``<split>/<file>`` from ``coco_url``).
        with_masks: also decode instance masks (polygons and RLE).
        transforms: ``f(image, target) -> (image, target)`` applied last.
        on_error: ``'raise'``: a broken image raises ``DataError`` naming file and image id;
            ``'skip'``: return the next valid sample instead and record it in ``skipped``
            (per process: each DataLoader worker keeps its own list).
        index: a ``CocoIndex`` to use instead of reading ``ann_file``.

    Boxes are clipped to the image; boxes with no area left are dropped (torchvision's detectors
    reject them). Crowd annotations are kept, flagged by ``iscrowd``. An annotation without a
    segmentation gets its filled box as mask.
    """

    def __init__(
        self,
        ann_file: str | os.PathLike | None,
        image_dir: str | os.PathLike,
        with_masks: bool = False,
        transforms: Transform | None = None,
        on_error: str = "raise",
        index: CocoIndex | None = None,
    ):
        if on_error not in ("raise", "skip"):
            raise ValueError(f"on_error must be 'raise' or 'skip', got {on_error!r}")
        if index is None:
            if ann_file is None:
                raise ValueError("give ann_file or index")
            index = CocoIndex.from_file(ann_file)
        self.index = index
        self.image_dir = Path(image_dir)
        self.with_masks = with_masks
        self.transforms = transforms
        self.on_error = on_error
        self.image_ids = list(index.image_ids)
        self.skipped: list[SkippedSample] = []
        self._skipped_ids: set[int] = set()

    def __len__(self) -> int:
        return len(self.image_ids)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, Target]:
        if self.on_error == "raise":
            return self._load(i)
        for step in range(len(self)):  # the next valid sample, wrapping around
            j = (i + step) % len(self)
            try:
                return self._load(j)
            except DataError as err:
                self._record_skip(j, err)
        raise DataError(f"{self.index.path}: no readable image at all ({len(self)} tried)")

    def _record_skip(self, i: int, err: DataError) -> None:
        iid = self.image_ids[i]
        if iid not in self._skipped_ids:
            self._skipped_ids.add(iid)
            try:
                file = image_relpath(self.image_info(i))
            except ValueError:
                file = "?"
            self.skipped.append(SkippedSample(iid, file, str(err)))

    def image_info(self, i: int) -> dict:
        """The json record of the ``i``-th image."""
        return self.index.images[self.image_ids[i]]

    def image_path(self, i: int) -> Path:
        """Path of the ``i``-th image (``DataError`` if its file_name leaves the folder)."""
        rec = self.image_info(i)
        try:
            return image_path(self.image_dir, rec, f"image {rec['id']}")
        except ValueError as err:
            raise DataError(f"{self.index.path}: {err}") from err

    def load_image(self, i: int) -> torch.Tensor:
        """(3, H, W) float32 RGB in [0, 1]; ``DataError`` naming file and image id if broken."""
        rec, path = self.image_info(i), self.image_path(i)
        where = f"{path} (image {rec['id']} of {self.index.path})"
        if not path.is_file():
            raise DataError(f"{where}: file not found")
        try:
            image = read_image_rgb(path)
        except (OSError, RuntimeError, SyntaxError, ValueError) as err:
            raise DataError(f"{where}: cannot decode: {err}") from err
        size = (int(rec.get("height", image.shape[1])), int(rec.get("width", image.shape[2])))
        if tuple(image.shape[1:]) != size:
            raise DataError(
                f"{where}: decoded size {tuple(image.shape[1:])} (h, w, EXIF applied) "
                f"differs from the json's {size}"
            )
        return image

    def _load(self, i: int) -> tuple[torch.Tensor, Target]:
        image = self.load_image(i)
        target = self.load_target(i, image.shape[1], image.shape[2])
        if self.transforms is not None:
            image, target = self.transforms(image, target)
        return image, target

    def load_target(self, i: int, height: int, width: int) -> Target:
        """Target dict of the ``i``-th image (see the class docstring)."""
        iid = self.image_ids[i]
        anns = self.index.anns_by_image[iid]
        try:
            target = _boxes_target(anns, self.index.cat_id_to_label, height, width)
            if self.with_masks:
                kept = [anns[k] for k in target.pop("_kept").tolist()]
                target["masks"] = _masks(kept, height, width)
            else:
                target.pop("_kept")
        except (KeyError, TypeError, ValueError) as err:
            raise DataError(f"{self.index.path}: image {iid}: bad annotation: {err!r}") from err
        target["image_id"] = iid
        return target


def _boxes_target(anns: list[dict], cat_to_label: dict[int, int], h: int, w: int) -> Target:
    """Boxes (clipped, xyxy), labels, iscrowd, area; ``_kept`` = positions of kept annotations."""
    xywh = np.asarray([a["bbox"] for a in anns], np.float64).reshape(-1, 4)
    # xyxy = (x, y, x + w, y + h), clipped into [0, W] x [0, H]
    xyxy = box_convert(torch.from_numpy(xywh), "xywh", "xyxy").numpy()
    xyxy[:, 0::2] = xyxy[:, 0::2].clip(0, w)
    xyxy[:, 1::2] = xyxy[:, 1::2].clip(0, h)
    keep = np.flatnonzero((xyxy[:, 2] > xyxy[:, 0]) & (xyxy[:, 3] > xyxy[:, 1]))
    kept = [anns[k] for k in keep]
    area = [float(a.get("area", a["bbox"][2] * a["bbox"][3])) for a in kept]
    return {
        "boxes": torch.as_tensor(xyxy[keep], dtype=torch.float32).reshape(-1, 4),
        "labels": torch.tensor(
            [cat_to_label[int(a["category_id"])] for a in kept], dtype=torch.int64
        ),
        "iscrowd": torch.tensor([int(a.get("iscrowd", 0)) for a in kept], dtype=torch.int64),
        "area": torch.tensor(area, dtype=torch.float32),
        "_kept": torch.as_tensor(keep, dtype=torch.int64),
    }


def _masks(anns: list[dict], h: int, w: int) -> torch.Tensor:
    """(N, H, W) uint8 masks; the filled box where an annotation has no segmentation."""
    masks = np.zeros((len(anns), h, w), np.uint8)
    for k, ann in enumerate(anns):
        segm = ann.get("segmentation")
        if segm:
            masks[k] = segmentation_to_mask(segm, h, w)
        else:
            x, y, bw, bh = ann["bbox"]
            y0, x0 = max(0, int(y)), max(0, int(x))
            masks[k, y0 : int(np.ceil(y + bh)), x0 : int(np.ceil(x + bw))] = 1
    return torch.from_numpy(masks)


def skipped_id(images: DetectionDataset, index: int, target: dict) -> int:
    """The id of the image asked for when ``on_error=skip`` replaced it by another, else -1."""
    wanted = images.image_ids[index]
    return -1 if int(target["image_id"]) == wanted else int(wanted)
