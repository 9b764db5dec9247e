"""The demo dataset's classes (v2): shape family / part structure x texture, and how to draw them.

A class is a (shape, texture) pair, as real categories are defined by form and surface, not by
colour: colour, brightness, scale, rotation and aspect vary *within* every class (drawn per
instance in :mod:`drcl.data.demo`). :data:`CLASS_TABLE` lists the 48 classes in order of training
frequency (rank 0 is the most frequent). Eight rare classes are *twins* of a frequent class: the
same texture and a shape that differs in one detail (a sixth point, a notch, a gap, a second
arrow head), or the same shape and a texture that differs in one detail (a rim, broken stripes).

Shapes are implicit functions ``(u, v) -> inside`` on object-frame coordinates with radius about
1, so part structures (a disc on a stick, two discs on a bar) are one mask; textures are functions
of the same coordinates that return a tone t in [0, 1] between the instance's two colours.

Everything here is pure geometry and numpy; :mod:`drcl.data.demo` does the planning and writing.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

_Mask = Callable[[np.ndarray, np.ndarray], np.ndarray]


def _regular_polygon(sides: int, radius: float = 1.0, start: float = -math.pi / 2) -> _Mask:
    """Inside a regular polygon of circumradius ``radius`` with a vertex at angle ``start``."""

    def mask(u: np.ndarray, v: np.ndarray) -> np.ndarray:
        r, th = np.hypot(u, v), np.arctan2(v, u) - start
        sector = 2 * math.pi / sides
        edge = radius * math.cos(sector / 2) / np.cos(np.mod(th, sector) - sector / 2)
        return r <= edge

    return mask


def _star(points: int, inner: float = 0.45) -> _Mask:
    """A star: radius swings linearly between ``inner`` and 1 over each point's sector."""

    def mask(u: np.ndarray, v: np.ndarray) -> np.ndarray:
        th = np.mod(np.arctan2(v, u) + math.pi / 2, 2 * math.pi / points) * points / (2 * math.pi)
        edge = inner + (1 - inner) * np.abs(1 - 2 * th)  # 1 at a point, inner between points
        return np.hypot(u, v) <= edge

    return mask


def _box(u: np.ndarray, v: np.ndarray, x0: float, y0: float, x1: float, y1: float) -> np.ndarray:
    return (u >= x0) & (u <= x1) & (v >= y0) & (v <= y1)


def _disc(u: np.ndarray, v: np.ndarray, cx: float, cy: float, r: float) -> np.ndarray:
    return (u - cx) ** 2 + (v - cy) ** 2 <= r * r


def _arrow(u: np.ndarray, v: np.ndarray, double: bool) -> np.ndarray:
    shaft = _box(u, v, -0.95 if not double else -0.4, -0.2, 0.4, 0.2)
    head = (u >= 0.25) & (u <= 1.0) & (np.abs(v) <= 0.7 * (1.0 - u) / 0.75)
    out = shaft | head
    if double:
        out |= (u <= -0.25) & (u >= -1.0) & (np.abs(v) <= 0.7 * (1.0 + u) / 0.75)
    return out


SHAPE_MASKS: dict[str, _Mask] = {
    # the ten shape families of the ordinary classes
    "disc": lambda u, v: _disc(u, v, 0, 0, 1.0),
    "square": lambda u, v: _box(u, v, -0.8, -0.8, 0.8, 0.8),
    "triangle": lambda u, v: _regular_polygon(3, 1.1)(u, v - 0.15),
    "star": _star(5),
    "cross": lambda u, v: _box(u, v, -1, -0.33, 1, 0.33) | _box(u, v, -0.33, -1, 0.33, 1),
    "ring": lambda u, v: (np.hypot(u, v) <= 1.0) & (np.hypot(u, v) >= 0.55),
    "lollipop": lambda u, v: _disc(u, v, 0, -0.4, 0.6) | _box(u, v, -0.13, 0, 0.13, 1.0),
    "dumbbell": lambda u, v: (
        _disc(u, v, -0.62, 0, 0.38)
        | _disc(u, v, 0.62, 0, 0.38)
        | _box(u, v, -0.62, -0.13, 0.62, 0.13)
    ),
    "arrow": lambda u, v: _arrow(u, v, double=False),
    "tee": lambda u, v: _box(u, v, -0.9, -0.85, 0.9, -0.4) | _box(u, v, -0.22, -0.85, 0.22, 0.95),
    # one-detail variants, used only by the rare twins
    "star6": _star(6),
    "notched_square": lambda u, v: (
        _box(u, v, -0.8, -0.8, 0.8, 0.8) & ~_box(u, v, 0.2, -0.9, 0.9, -0.2)
    ),
    "split_ring": lambda u, v: (
        (np.hypot(u, v) <= 1.0) & (np.hypot(u, v) >= 0.55) & ~((u > 0) & (np.abs(v) < 0.22))
    ),
    "double_arrow": lambda u, v: _arrow(u, v, double=True),
}  # fmt: skip
SHAPES: tuple[str, ...] = tuple(SHAPE_MASKS)


def _lattice(u: np.ndarray, v: np.ndarray, period: float, phase: float) -> tuple:
    return (u / period + phase) % 1.0 - 0.5, (v / period + phase) % 1.0 - 0.5


# texture name -> t(u, v, period, phase) in [0, 1]; period in object units
_TEXTURE_FNS: dict[str, Callable[..., np.ndarray]] = {
    "solid": lambda u, v, p, ph: np.zeros_like(u),
    "stripes": lambda u, v, p, ph: (np.floor(u / p + ph) % 2).astype(np.float64),
    "checks": lambda u, v, p, ph: ((np.floor(u / p + ph) + np.floor(v / p + ph)) % 2).astype(float),
    "dots": lambda u, v, p, ph: np.hypot(*_lattice(u, v, p, ph)) < 0.3,
    "grid": lambda u, v, p, ph: np.minimum(*np.abs(_lattice(u, v, p, ph))) < 0.12,
    # variants of the twins
    "dashes": lambda u, v, p, ph: (
        (np.floor(u / p + ph) % 2) * (np.floor(v / (1.5 * p) + ph) % 2)
    ),
    "rimmed": None,  # solid with a contrasting rim: needs the shape's mask, see texture_tone
}  # fmt: skip
TEXTURES: tuple[str, ...] = tuple(_TEXTURE_FNS)
_ADJECTIVE = {
    "solid": "solid",
    "stripes": "striped",
    "checks": "checked",
    "dots": "dotted",
    "grid": "gridded",
    "dashes": "dashed",
    "rimmed": "rimmed",
}


@dataclass(frozen=True)
class DemoClass:
    """One class of the demo dataset.

    Attributes:
        shape: a key of :data:`SHAPE_MASKS`.
        texture: one of :data:`TEXTURES`.
        twin: name of the frequent class this one differs from in one detail only, or None.
    """

    shape: str
    texture: str
    twin: str | None = None

    @property
    def name(self) -> str:
        """Synset-like name, e.g. ``striped_lollipop``."""
        return f"{_ADJECTIVE[self.texture]}_{self.shape}"

    @property
    def definition(self) -> str:
        return f"a {self.shape.replace('_', ' ')} with a {self.texture} surface, of any colour"


def _c(texture: str, shape: str, twin: str | None = None) -> DemoClass:
    return DemoClass(shape=shape, texture=texture, twin=twin)


# In rank order: the training instance count falls geometrically with the rank (see demo.py), so
# the head (about the first 14) is frequent, the middle common and the last 14 rare. Every shape
# family appears with several textures and every texture on several shapes, so neither alone
# names a class.
CLASS_TABLE: tuple[DemoClass, ...] = (
    # head
    _c("solid", "disc"),
    _c("stripes", "square"),
    _c("dots", "triangle"),
    _c("checks", "star"),
    _c("grid", "ring"),
    _c("solid", "lollipop"),
    _c("stripes", "cross"),
    _c("dots", "dumbbell"),
    _c("checks", "arrow"),
    _c("solid", "tee"),
    _c("stripes", "ring"),
    _c("dots", "square"),
    _c("grid", "disc"),
    _c("checks", "triangle"),
    # body
    _c("solid", "star"),
    _c("stripes", "lollipop"),
    _c("dots", "cross"),
    _c("grid", "arrow"),
    _c("checks", "tee"),
    _c("solid", "dumbbell"),
    _c("stripes", "disc"),
    _c("dots", "ring"),
    _c("grid", "square"),
    _c("checks", "lollipop"),
    _c("solid", "triangle"),
    _c("stripes", "arrow"),
    _c("dots", "tee"),
    _c("grid", "dumbbell"),
    _c("checks", "cross"),
    _c("solid", "ring"),
    _c("stripes", "star"),
    _c("dots", "disc"),
    _c("grid", "triangle"),
    _c("checks", "square"),
    # tail: eight twins of head classes, then six ordinary rare classes
    _c("checks", "star6", twin="checked_star"),  # shape detail: six points, not five
    _c("stripes", "notched_square", twin="striped_square"),  # shape detail: a notch
    _c("grid", "split_ring", twin="gridded_ring"),  # shape detail: a gap
    _c("checks", "double_arrow", twin="checked_arrow"),  # shape detail: a second head
    _c("rimmed", "disc", twin="solid_disc"),  # texture detail: a rim
    _c("rimmed", "lollipop", twin="solid_lollipop"),  # texture detail: a rim
    _c("dashes", "cross", twin="striped_cross"),  # texture detail: broken stripes
    _c("dashes", "ring", twin="striped_ring"),  # texture detail: broken stripes
    _c("grid", "lollipop"),
    _c("solid", "cross"),
    _c("stripes", "tee"),
    _c("dots", "arrow"),
    _c("grid", "star"),
    _c("checks", "dumbbell"),
)


def class_table() -> list[dict[str, object]]:
    """The class table as plain records (rank, name, shape, texture, twin)."""
    return [
        {"rank": rank, "name": c.name, "shape": c.shape, "texture": c.texture, "twin": c.twin}
        for rank, c in enumerate(CLASS_TABLE)
    ]


def confusable_pairs() -> list[tuple[str, str, str]]:
    """(rare class, its frequent twin, the attribute that differs: 'shape' or 'texture')."""
    by_name = {c.name: c for c in CLASS_TABLE}
    pairs = []
    for c in CLASS_TABLE:
        if c.twin is None:
            continue
        t = by_name[c.twin]
        pairs.append((c.name, t.name, "shape" if c.shape != t.shape else "texture"))
    return pairs


def shape_mask(shape: str, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Inside of ``shape`` at object-frame coordinates (radius about 1): bool like ``u``."""
    if shape not in SHAPE_MASKS:
        raise ValueError(f"unknown shape {shape!r}; allowed: {', '.join(SHAPES)}")
    return np.asarray(SHAPE_MASKS[shape](u, v), dtype=bool)


def texture_tone(
    texture: str, shape: str, u: np.ndarray, v: np.ndarray, period: float, phase: float
) -> np.ndarray:
    """Tone in [0, 1] of ``texture`` (0: the instance's first colour, 1: its second).

    Args:
        texture: one of :data:`TEXTURES`.
        shape: the object's shape (the rim of ``rimmed`` follows its outline).
        u, v: object-frame coordinates (radius about 1); the texture turns with the object.
        period: pattern period in object units (the caller keeps it >= 3 pixels).
        phase: in [0, 1): shifts the pattern so instances are not all aligned alike.

    Returns:
        float64 array like ``u``.
    """
    if texture not in _TEXTURE_FNS:
        raise ValueError(f"unknown texture {texture!r}; allowed: {', '.join(TEXTURES)}")
    if texture == "rimmed":
        # rim = inside the shape but not inside the shape shrunk by 22% (a band along the outline)
        inner = shape_mask(shape, u / 0.78, v / 0.78)
        return (~inner).astype(np.float64)
    return np.asarray(_TEXTURE_FNS[texture](u, v, period, phase), dtype=np.float64)
