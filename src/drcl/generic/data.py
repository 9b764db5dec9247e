"""A procedurally generated, class-balanced classification set for the generic backbone.

Deliberately unlike the detection demo set (:mod:`drcl.data.demo_shapes`, whose classes are
(shape, pattern, colour) triples drawn as several objects per image): here one object per image,
a class is a (shape, texture) pair and the colours are random, so colour says nothing about the
class. Shapes: ellipse, dodecagon, thick arc, crescent, bow tie. Textures: white noise,
concentric rings, wavy bands, sunburst. 5 x 4 = 20 classes.

Layout (torchvision ``ImageFolder``-compatible)::

    out_dir/train/<class>/000001.png ...     train_per_class images per class
    out_dir/val/<class>/000001.png ...       val_per_class images per class
    out_dir/classes.json                     class names (label order), sizes, seed

Deterministic: every image draws from its own stream ``(seed, split, index)``; PNGs carry no
timestamp, so the same seed gives byte-identical files.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image

from drcl.utils.io import atomic_write_json, read_json

_Mask = Callable[[np.ndarray, np.ndarray], np.ndarray]  # (u, v) unit coords -> bool mask
_Texture = Callable[[np.ndarray, np.ndarray, np.random.Generator], np.ndarray]  # -> t in [0, 1]


def _polygon_mask(sides: int) -> _Mask:
    def mask(u: np.ndarray, v: np.ndarray) -> np.ndarray:
        r, th = np.hypot(u, v), np.arctan2(v, u)
        sector = 2 * math.pi / sides
        # distance to the edge of a regular polygon of circumradius 1 along direction th
        edge = math.cos(sector / 2) / np.cos(np.mod(th, sector) - sector / 2)
        return r <= edge

    return mask


SHAPES: dict[str, _Mask] = {
    "ellipse": lambda u, v: (u / 1.0) ** 2 + (v / 0.5) ** 2 <= 1.0,
    "dodecagon": _polygon_mask(12),
    "arc": lambda u, v: (
        (np.hypot(u, v) >= 0.55)
        & (np.hypot(u, v) <= 1.0)
        & (np.mod(np.arctan2(v, u), 2 * math.pi) <= math.radians(220))
    ),
    "crescent": lambda u, v: (np.hypot(u, v) <= 1.0) & (np.hypot(u - 0.5, v) > 0.8),
    "bowtie": lambda u, v: (np.abs(v) <= np.abs(u) * 0.9) & (np.abs(u) <= 1.0),
}
TEXTURES: dict[str, _Texture] = {
    "noise": lambda u, v, rng: rng.uniform(0, 1, u.shape),
    "rings": lambda u, v, rng: 0.5 + 0.5 * np.sin(2 * math.pi * np.hypot(u, v) * 3.5),
    "waves": lambda u, v, rng: 0.5 + 0.5 * np.sin(2 * math.pi * (u * 2.5 + 0.25 * np.sin(5 * v))),
    "sunburst": lambda u, v, rng: 0.5 + 0.5 * np.sin(8 * np.arctan2(v, u)),
}
CLASSES: tuple[str, ...] = tuple(f"{t}_{s}" for s in SHAPES for t in TEXTURES)
_SPLIT_CODE = {"train": 0, "val": 1}


def _background(size: int, rng: np.random.Generator) -> np.ndarray:
    """Smooth random colour field (bilinear upsampling of a 4x4 grid): (size, size, 3) float."""
    grid = rng.uniform(30, 225, (4, 4, 3))
    pos = np.linspace(0, 3, size)
    i0 = np.clip(pos.astype(int), 0, 2)
    f = (pos - i0)[:, None]
    rows = grid[i0] * (1 - f[..., None]) + grid[i0 + 1] * f[..., None]  # (size, 4, 3)
    cols = rows[:, i0] * (1 - f.T[..., None]) + rows[:, i0 + 1] * f.T[..., None]
    return cols


def render_image(label: int, size: int, rng: np.random.Generator) -> np.ndarray:
    """One image of class ``label``: (size, size, 3) uint8, one object on a smooth background."""
    shape, texture = SHAPES[CLASSES[label].split("_", 1)[1]], TEXTURES[CLASSES[label].split("_")[0]]
    radius = rng.uniform(0.28, 0.45) * size
    cx, cy = rng.uniform(radius * 0.7, size - radius * 0.7, 2)
    angle = rng.uniform(0, 2 * math.pi)
    ys, xs = np.mgrid[0:size, 0:size].astype(np.float64) + 0.5
    dx, dy = (xs - cx) / radius, (ys - cy) / radius
    u = dx * math.cos(angle) + dy * math.sin(angle)  # object frame: rotated, unit radius
    v = -dx * math.sin(angle) + dy * math.cos(angle)
    mask = shape(u, v)
    t = texture(u, v, rng)[..., None]
    c1, c2 = rng.uniform(0, 255, (2, 3))
    img = _background(size, rng)
    img = np.where(mask[..., None], c1 * (1 - t) + c2 * t, img)
    img += rng.normal(0.0, 5.0, img.shape)  # sensor noise
    return np.clip(np.rint(img), 0, 255).astype(np.uint8)


def make_generic_dataset(
    out_dir: str | Path,
    seed: int = 0,
    image_size: int = 64,
    train_per_class: int = 150,
    val_per_class: int = 25,
) -> Path:
    """Write the classification set (layout in the module docstring); returns ``classes.json``.

    Raises:
        ValueError: a size or count below 1, or ``image_size`` below 16.
    """
    if image_size < 16 or train_per_class < 1 or val_per_class < 1:
        raise ValueError(
            f"generic set: image_size >= 16 and counts >= 1 needed, got {image_size}, "
            f"{train_per_class}, {val_per_class}"
        )
    out = Path(out_dir)
    for split, per_class in (("train", train_per_class), ("val", val_per_class)):
        for name in CLASSES:
            (out / split / name).mkdir(parents=True, exist_ok=True)
        for index in range(per_class * len(CLASSES)):
            label = index % len(CLASSES)  # interleaved: balanced by construction
            rng = np.random.default_rng([seed, _SPLIT_CODE[split], index])
            path = out / split / CLASSES[label] / f"{index // len(CLASSES) + 1:06d}.png"
            Image.fromarray(render_image(label, image_size, rng)).save(path, format="PNG")
    meta = {
        "classes": list(CLASSES),
        "image_size": image_size,
        "seed": seed,
        "train_per_class": train_per_class,
        "val_per_class": val_per_class,
    }
    return atomic_write_json(out / "classes.json", meta, indent=1)


def load_split(data_dir: str | Path, split: str) -> tuple[np.ndarray, np.ndarray]:
    """All images of a split in memory: ``(N, H, W, 3)`` uint8 and ``(N,)`` int64 labels."""
    meta_file = Path(data_dir) / "classes.json"
    if not meta_file.is_file():
        raise FileNotFoundError(f"{meta_file} not found: run `drcl data make-generic` first")
    classes = read_json(meta_file)["classes"]
    images, labels = [], []
    for label, name in enumerate(classes):
        for path in sorted((Path(data_dir) / split / name).glob("*.png")):
            images.append(np.asarray(Image.open(path).convert("RGB")))
            labels.append(label)
    if not images:
        raise FileNotFoundError(f"{data_dir}/{split}: no images")
    return np.stack(images), np.asarray(labels, dtype=np.int64)
