"""Detections drawn on their image: boxes coloured by frequency group, class name and score.

torchvision's ``draw_bounding_boxes`` / ``draw_segmentation_masks`` do the drawing; the image is
written as PNG atomically.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Protocol

import torch
from PIL import Image
from torch import Tensor
from torchvision.utils import draw_bounding_boxes, draw_segmentation_masks

from drcl.data.groups import GROUP_COLORS
from drcl.utils.io import atomic_write

UNKNOWN_GROUP_COLOR = "#1f77b4"  # classes without a frequency group
MASK_ALPHA = 0.4
MASK_THRESHOLD = 0.5  # as the results' RLEs (detection.inference.MASK_THRESHOLD)


class NamedCategory(Protocol):
    """What drawing needs of a category (``drcl.data.categories.CategoryRecord`` has it)."""

    name: str
    frequency: str | None


def group_color(category: NamedCategory) -> str:
    """The colour of the category's frequency group (every figure uses the same ones)."""
    return GROUP_COLORS.get(category.frequency or "", UNKNOWN_GROUP_COLOR)


def draw_detections(
    image: Tensor,
    output: dict[str, Tensor],
    categories: Sequence[NamedCategory],
    score_thr: float,
    line_width: int = 2,
) -> Tensor:
    """Boxes (and masks) scoring at least ``score_thr`` on ``image``.

    Args:
        image: (3, H, W) float in [0, 1].
        output: the detector's ``boxes (K, 4)`` xyxy pixels, ``scores (K,)``, ``labels (K,)``
            in 1..C, optional ``masks (K, 1, H, W)`` probabilities.
        categories: in label order (label k -> ``categories[k - 1]``), e.g. the records of the
            model's :class:`~drcl.data.categories.CategoryTable`.
        score_thr: the lowest score drawn.
        line_width: box outline in pixels.

    Returns:
        (3, H, W) uint8.
    """
    canvas = (image.detach().cpu().clamp(0, 1) * 255).round().to(torch.uint8)
    keep = output["scores"].detach().cpu() >= score_thr
    labels = output["labels"].detach().cpu()[keep].tolist()
    scores = output["scores"].detach().cpu()[keep].tolist()
    cats = [categories[lab - 1] for lab in labels]
    colors = [group_color(c) for c in cats]
    if not cats:
        return canvas
    if "masks" in output:
        masks = output["masks"].detach().cpu()[keep][:, 0] >= MASK_THRESHOLD
        canvas = draw_segmentation_masks(canvas, masks, alpha=MASK_ALPHA, colors=colors)
    text = [f"{c.name} {s:.2f}" for c, s in zip(cats, scores, strict=True)]
    return draw_bounding_boxes(
        canvas,
        output["boxes"].detach().cpu()[keep],
        labels=text,
        colors=colors,
        width=line_width,
        label_colors="white",
        label_background_colors=colors,
        fill_labels=True,
    )


def save_png(image: Tensor, path: str | os.PathLike) -> Path:
    """(3, H, W) uint8 -> PNG at ``path`` (temporary file + rename)."""
    array = image.permute(1, 2, 0).contiguous().numpy()
    return atomic_write(path, lambda tmp: Image.fromarray(array).save(tmp, format="PNG"))


def drawing_names(file_names: list[str]) -> list[str]:
    """Where each input's drawing goes, relative to ``--draw``: ``a/b.jpg`` -> ``a/b.png``.

    Two inputs that would share a name (``x.jpg`` and ``x.png``) keep their full name
    (``x.jpg.png``, ``x.png.png``), so no drawing overwrites another.
    """
    stems = [Path(f).with_suffix(".png").as_posix() for f in file_names]
    counts: dict[str, int] = {}
    for s in stems:
        counts[s] = counts.get(s, 0) + 1
    return [s if counts[s] == 1 else f"{f}.png" for s, f in zip(stems, file_names, strict=True)]
