"""A procedurally generated, class-balanced classification set for the generic backbone (v2).

The stand-in for ImageNet: many classes defined the way the detection demo's classes are (form and
surface, never colour), but with *other* shape families and *other* textures, so that what
transfers is the skill (colour-invariant shape and texture features at the detection crops'
scale), not the classes. A class is a (shape, texture) pair: 14 shapes x 8 textures = 112
classes. Every image is one object filling most of the frame, as a ground-truth crop with a
little context does, on the detection set's kind of textured, cluttered background, with part of
a second (distractor) object at the border in most images; colours, shading, rotation, aspect and
scale vary as in the detection set; half the images are rendered small and upsampled, as the crops
of small detection objects are.

What is *not* disjoint from the detection set (measured in docs/demo_dataset.md, "Overlap"):
the background model (by design), the colour model (by design), and a few shape families are
near some detection shape at some pose (:func:`shape_overlap` measures it).

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

from drcl.data.demo import _background, _colours, _smooth_noise
from drcl.utils.io import atomic_write_json, read_json

_Mask = Callable[[np.ndarray, np.ndarray], np.ndarray]  # (u, v) unit coords -> bool mask
_Texture = Callable[[np.ndarray, np.ndarray, np.random.Generator], np.ndarray]  # -> t in [0, 1]


def _in_polygon(points: list[tuple[float, float]]) -> _Mask:
    """Inside a convex polygon (either orientation) with vertices ``points`` in (u, v)."""
    pts = np.asarray(points, dtype=np.float64)

    def mask(u: np.ndarray, v: np.ndarray) -> np.ndarray:
        left, right = np.ones(u.shape, dtype=bool), np.ones(u.shape, dtype=bool)
        for (x0, y0), (x1, y1) in zip(pts, np.roll(pts, -1, axis=0), strict=True):
            side = (x1 - x0) * (v - y0) - (y1 - y0) * (u - x0)
            left &= side >= 0
            right &= side <= 0
        return left | right

    return mask


def _disc(u, v, cx: float, cy: float, r: float) -> np.ndarray:
    return (u - cx) ** 2 + (v - cy) ** 2 <= r * r


def _heart(u: np.ndarray, v: np.ndarray) -> np.ndarray:
    x, y = u * 1.15, -v * 1.15 + 0.2  # the classic quartic, point down
    return (x * x + y * y - 1) ** 3 - x * x * y**3 <= 0


def _gear(u: np.ndarray, v: np.ndarray) -> np.ndarray:
    r, th = np.hypot(u, v), np.arctan2(v, u)
    teeth = np.mod(th * 8 / (2 * math.pi), 1.0) < 0.5  # 8 square teeth
    return (r <= 0.72) | ((r <= 1.0) & teeth)


def _flower(u: np.ndarray, v: np.ndarray) -> np.ndarray:
    r, th = np.hypot(u, v), np.arctan2(v, u)
    return r <= 0.35 + 0.65 * np.abs(np.cos(2 * th))  # four round petals


SHAPES: dict[str, _Mask] = {
    "crescent": lambda u, v: _disc(u, v, 0, 0, 1.0) & ~_disc(u, v, 0.45, 0, 0.8),
    "bowtie": lambda u, v: (np.abs(v) <= np.abs(u) * 0.9) & (np.abs(u) <= 1.0),
    "semicircle": lambda u, v: _disc(u, v, 0, -0.35, 1.0) & (v >= -0.35),
    "trapezoid": _in_polygon([(-1.0, 0.55), (1.0, 0.55), (0.45, -0.55), (-0.45, -0.55)]),
    "kite": _in_polygon([(0.0, 1.0), (0.55, -0.25), (0.0, -0.6), (-0.55, -0.25)]),
    "heart": _heart,
    "gear": _gear,
    "flower": _flower,
    "house": lambda u, v: (
        ((np.abs(u) <= 0.6) & (v >= -0.1) & (v <= 0.85))
        | _in_polygon([(-0.85, -0.1), (0.85, -0.1), (0.0, -0.95)])(u, v)
    ),
    "chevron": lambda u, v: (np.abs(u) <= 0.95) & (v - 0.7 * np.abs(u) >= -0.55)
    & (v - 0.7 * np.abs(u) <= 0.0),
    "lshape": lambda u, v: ((u >= -0.8) & (u <= -0.2) & (np.abs(v) <= 0.9))
    | ((u >= -0.8) & (u <= 0.8) & (v >= 0.3) & (v <= 0.9)),
    "pacman": lambda u, v: _disc(u, v, 0, 0, 1.0) & ~((u > 0) & (np.abs(v) < 0.75 * u)),
    "cloud": lambda u, v: (
        _disc(u, v, -0.5, 0.15, 0.45) | _disc(u, v, 0.5, 0.15, 0.45) | _disc(u, v, 0, -0.2, 0.55)
    ),
    "parallelogram": _in_polygon([(-1.0, 0.45), (0.4, 0.45), (1.0, -0.45), (-0.4, -0.45)]),
}  # fmt: skip


def _veins(u: np.ndarray, v: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    field = _smooth_noise(u.shape[0], 5, 1.0, rng)[..., 0]
    return (np.abs(field) < 0.18).astype(np.float64)


TEXTURES: dict[str, _Texture] = {
    "noise": lambda u, v, rng: rng.uniform(0, 1, u.shape),
    "rings": lambda u, v, rng: 0.5 + 0.5 * np.sin(2 * math.pi * np.hypot(u, v) * 3.0),
    "waves": lambda u, v, rng: 0.5 + 0.5 * np.sin(2 * math.pi * (u * 2.0 + 0.3 * np.sin(4 * v))),
    "sunburst": lambda u, v, rng: 0.5 + 0.5 * np.sin(7 * np.arctan2(v, u)),
    "spiral": lambda u, v, rng: 0.5 + 0.5 * np.sin(3 * np.arctan2(v, u) + 9 * np.hypot(u, v)),
    "blotches": lambda u, v, rng: (_smooth_noise(u.shape[0], 4, 1.0, rng)[..., 0] > 0) * 1.0,
    "gradient": lambda u, v, rng: np.clip((u + 1.0) / 2.0, 0.0, 1.0),
    "veins": _veins,
}
CLASSES: tuple[str, ...] = tuple(f"{t}_{s}" for s in SHAPES for t in TEXTURES)
_SPLIT_CODE = {"train": 0, "val": 1}


def _frame(size: int, radius: float, centre: np.ndarray, rng: np.random.Generator):
    """Object-frame coordinates (any rotation, aspect 0.7-1.4, unit radius) of every pixel."""
    aspect = math.exp(rng.uniform(math.log(0.7), math.log(1.4)))
    angle = rng.uniform(0, 2 * math.pi)
    ys, xs = np.mgrid[0:size, 0:size].astype(np.float64) + 0.5
    dx, dy = (xs - centre[0]) / radius, (ys - centre[1]) / radius
    u = (dx * math.cos(angle) + dy * math.sin(angle)) / aspect
    v = (-dx * math.sin(angle) + dy * math.cos(angle)) * aspect
    return u, v


def _paint(img: np.ndarray, label: int, size: int, radius: float, centre, rng) -> None:
    """Draw one object of class ``label`` into ``img`` (float RGB, changed in place)."""
    texture, shape = CLASSES[label].split("_", 1)
    u, v = _frame(size, radius, centre, rng)
    mask = SHAPES[shape](u, v)
    t = TEXTURES[texture](u, v, rng)[..., None]
    first, second = _colours(rng)
    psi = rng.uniform(0, 2 * math.pi)  # light direction, as in the detection set
    shade = rng.uniform(0.75, 1.15) * (1 + 0.15 * (u * math.cos(psi) + v * math.sin(psi)))
    rgb = (first * (1 - t) + second * t) * shade[..., None]
    img[mask] = rgb[mask]


def render_image(label: int, size: int, rng: np.random.Generator) -> np.ndarray:
    """One image of class ``label``: (size, size, 3) uint8.

    The object fills most of the frame (radius 0.34-0.46 of the side: a ground-truth crop with
    10% context); in 70% of the images part of another class's object (a distractor, not the
    label) shows at the border, behind it. Half the images are drawn at 1/4-2/3 of the side and
    upsampled, like crops of small objects.
    """
    small = rng.random() < 0.5
    draw = int(round(size * rng.uniform(0.25, 0.67))) if small else size
    draw = max(draw, 12)
    img = _background(draw, rng).astype(np.float64)
    if rng.random() < 0.7:
        other = int(rng.integers(len(CLASSES)))
        angle = rng.uniform(0, 2 * math.pi)
        centre = draw / 2 + 0.75 * draw * np.array([math.cos(angle), math.sin(angle)])
        _paint(img, other, draw, rng.uniform(0.25, 0.45) * draw, centre, rng)
    centre = draw / 2 + rng.uniform(-0.06, 0.06, 2) * draw
    _paint(img, label, draw, rng.uniform(0.34, 0.46) * draw, centre, rng)
    img += rng.normal(0.0, 4.0, img.shape)  # sensor noise
    out = np.clip(np.rint(img), 0, 255).astype(np.uint8)
    if draw != size:
        out = np.asarray(Image.fromarray(out).resize((size, size), Image.BILINEAR))
    return out


def make_generic_dataset(
    out_dir: str | Path,
    seed: int = 0,
    image_size: int = 64,
    train_per_class: int = 60,
    val_per_class: int = 10,
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


def _normalised_mask(shape_fn: _Mask, x: np.ndarray, y: np.ndarray, angle: float) -> np.ndarray:
    """``shape_fn`` moved to its centroid, scaled to area pi and turned by ``angle``, on (x, y)."""
    g = np.linspace(-1.5, 1.5, 301)
    gu, gv = np.meshgrid(g, g)
    inside = shape_fn(gu, gv)
    cell = (g[1] - g[0]) ** 2
    scale = math.sqrt(inside.sum() * cell / math.pi)
    cu, cv = gu[inside].mean(), gv[inside].mean()
    c, s = math.cos(angle), math.sin(angle)
    return shape_fn(cu + scale * (c * x - s * y), cv + scale * (s * x + c * y))


def shape_overlap(angles: int = 72, grid: int = 161) -> list[tuple[str, str, float]]:
    """Best IoU of every generic shape with every detection shape, over rotation and mirroring.

    Both masks are centred on their centroids and scaled to the same area; the generic one turns
    in ``360 / angles`` degree steps, mirrored or not (aspect, a nuisance in both sets, is left
    at 1). An IoU near 1 means the two sets share that shape.

    Returns:
        (generic shape, detection shape, IoU) for every pair, highest IoU first.
    """
    from drcl.data.demo_shapes import SHAPE_MASKS

    g = np.linspace(-2.0, 2.0, grid)
    x, y = np.meshgrid(g, g)
    detection = {n: _normalised_mask(f, x, y, 0.0) for n, f in SHAPE_MASKS.items()}
    out = []
    for name, fn in SHAPES.items():
        turned = [
            _normalised_mask(fn, sign * x, y, 2 * math.pi * k / angles)
            for k in range(angles)
            for sign in (1, -1)
        ]
        for det_name, det in detection.items():
            best = max(float((m & det).sum() / (m | det).sum()) for m in turned)
            out.append((name, det_name, round(best, 3)))
    return sorted(out, key=lambda t: -t[2])
