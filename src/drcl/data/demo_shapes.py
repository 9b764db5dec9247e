"""The demo dataset's classes: shapes, patterns, colour families, and how to draw them.

A class is a (shape, pattern, colour family) triple. :data:`CLASS_TABLE` lists the 48 classes in
order of training frequency (rank 0 is the most frequent). Ten rare classes are *twins* of a
frequent class: same colour family, and the same shape or the same pattern, so they differ in one
attribute only. A detector that leans on colour (the simplicity bias 2DRCL targets) confuses them.

Everything here is pure geometry and numpy; :mod:`drcl.data.demo` does the planning and writing.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

SHAPES = ("disc", "square", "triangle", "star", "ring", "cross", "hexagon", "diamond", "pentagon")
PATTERNS = ("solid", "stripes", "checks", "dots", "gradient")
# Colour families: the base RGB of the family; each instance is jittered around it.
COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (205, 35, 35),
    "orange": (240, 135, 25),
    "yellow": (235, 210, 35),
    "green": (45, 160, 55),
    "teal": (25, 165, 165),
    "blue": (40, 75, 210),
    "purple": (130, 55, 185),
    "pink": (240, 115, 175),
    "brown": (125, 75, 35),
}
_PATTERN_ADJECTIVE = {
    "solid": "solid",
    "stripes": "striped",
    "checks": "checked",
    "dots": "dotted",
    "gradient": "gradient",
}


@dataclass(frozen=True)
class DemoClass:
    """One class of the demo dataset.

    Attributes:
        shape: one of :data:`SHAPES`.
        pattern: one of :data:`PATTERNS`.
        colour: a key of :data:`COLOURS`.
        twin: name of the frequent class this one differs from in one attribute only, or None.
    """

    shape: str
    pattern: str
    colour: str
    twin: str | None = None

    @property
    def name(self) -> str:
        """Synset-like name, e.g. ``red_striped_square``."""
        return f"{self.colour}_{_PATTERN_ADJECTIVE[self.pattern]}_{self.shape}"

    @property
    def definition(self) -> str:
        return f"a {self.colour} {self.shape} filled with a {self.pattern} pattern"


def _c(colour: str, pattern: str, shape: str, twin: str | None = None) -> DemoClass:
    return DemoClass(shape=shape, pattern=pattern, colour=colour, twin=twin)


# In rank order: the training instance count falls geometrically with the rank (see demo.py), so
# the head (about the first 13) is frequent, the middle common and the last 14 rare.
CLASS_TABLE: tuple[DemoClass, ...] = (
    # head
    _c("red", "solid", "disc"),
    _c("blue", "stripes", "square"),
    _c("green", "dots", "triangle"),
    _c("yellow", "checks", "star"),
    _c("purple", "gradient", "hexagon"),
    _c("orange", "solid", "ring"),
    _c("teal", "stripes", "cross"),
    _c("pink", "solid", "diamond"),
    _c("brown", "checks", "pentagon"),
    _c("red", "dots", "square"),
    _c("blue", "solid", "triangle"),
    _c("green", "gradient", "disc"),
    _c("yellow", "solid", "hexagon"),
    # body
    _c("purple", "stripes", "star"),
    _c("orange", "checks", "cross"),
    _c("teal", "dots", "ring"),
    _c("pink", "gradient", "pentagon"),
    _c("brown", "solid", "square"),
    _c("red", "stripes", "triangle"),
    _c("blue", "checks", "disc"),
    _c("green", "solid", "star"),
    _c("yellow", "dots", "diamond"),
    _c("purple", "solid", "pentagon"),
    _c("orange", "gradient", "hexagon"),
    _c("teal", "solid", "square"),
    _c("pink", "stripes", "ring"),
    _c("brown", "dots", "cross"),
    _c("red", "gradient", "star"),
    _c("blue", "dots", "hexagon"),
    _c("green", "checks", "pentagon"),
    _c("yellow", "stripes", "ring"),
    _c("teal", "checks", "triangle"),
    _c("purple", "dots", "disc"),
    _c("orange", "stripes", "diamond"),
    # tail: ten twins of head classes, then four ordinary rare classes
    _c("red", "solid", "square", twin="red_solid_disc"),  # shape only
    _c("red", "checks", "disc", twin="red_solid_disc"),  # pattern only
    _c("blue", "stripes", "hexagon", twin="blue_striped_square"),  # shape only
    _c("green", "solid", "triangle", twin="green_dotted_triangle"),  # pattern only
    _c("yellow", "checks", "cross", twin="yellow_checked_star"),  # shape only
    _c("purple", "stripes", "hexagon", twin="purple_gradient_hexagon"),  # pattern only
    _c("orange", "solid", "disc", twin="orange_solid_ring"),  # shape only
    _c("teal", "dots", "cross", twin="teal_striped_cross"),  # pattern only
    _c("pink", "solid", "star", twin="pink_solid_diamond"),  # shape only
    _c("brown", "stripes", "pentagon", twin="brown_checked_pentagon"),  # pattern only
    _c("purple", "checks", "square"),
    _c("yellow", "gradient", "triangle"),
    _c("teal", "gradient", "diamond"),
    _c("pink", "dots", "square"),
)


def class_table() -> list[dict[str, object]]:
    """The class table as plain records (rank, name, shape, pattern, colour, twin)."""
    return [
        {
            "rank": rank,
            "name": c.name,
            "shape": c.shape,
            "pattern": c.pattern,
            "colour": c.colour,
            "twin": c.twin,
        }
        for rank, c in enumerate(CLASS_TABLE)
    ]


def confusable_pairs() -> list[tuple[str, str, str]]:
    """(rare class, its frequent twin, the attribute that differs: 'shape' or 'pattern')."""
    by_name = {c.name: c for c in CLASS_TABLE}
    pairs = []
    for c in CLASS_TABLE:
        if c.twin is None:
            continue
        t = by_name[c.twin]
        differs = "shape" if c.shape != t.shape else "pattern"
        pairs.append((c.name, t.name, differs))
    return pairs


# ----------------------------------------------------------------------------------- geometry


def _regular(n: int, radius: float = 1.0, start: float = -math.pi / 2) -> np.ndarray:
    angles = start + 2 * math.pi * np.arange(n) / n
    return radius * np.stack([np.cos(angles), np.sin(angles)], axis=1)


def _ring_keyhole(outer: float = 1.0, inner: float = 0.55, n: int = 32) -> np.ndarray:
    # A ring as ONE polygon (COCO polygons cannot hold holes): round the outer circle, cut in
    # along a zero-width slit, round the inner circle the other way, and back out. Even-odd and
    # non-zero filling both leave the hole empty.
    angles = 2 * math.pi * np.arange(n + 1) / n
    out = outer * np.stack([np.cos(angles), np.sin(angles)], axis=1)
    inn = inner * np.stack([np.cos(angles[::-1]), np.sin(angles[::-1])], axis=1)
    return np.concatenate([out, inn], axis=0)


def _cross(arm: float = 0.34) -> np.ndarray:
    a = arm
    return np.array(
        [[a, -1], [a, -a], [1, -a], [1, a], [a, a], [a, 1],
         [-a, 1], [-a, a], [-1, a], [-1, -a], [-a, -a], [-a, -1]],
        dtype=np.float64,
    )  # fmt: skip


def _star(inner: float = 0.45) -> np.ndarray:
    pts = _regular(10)
    pts[1::2] *= inner
    return pts


def unit_polygon(shape: str) -> np.ndarray:
    """Outline of ``shape`` centred at 0 with radius about 1.

    Returns:
        (V, 2) float64 (x, y) vertices, y pointing down (image convention).
    """
    if shape == "disc":
        return _regular(40)
    if shape == "square":
        return np.array([[-0.8, -0.8], [0.8, -0.8], [0.8, 0.8], [-0.8, 0.8]])
    if shape == "triangle":
        return _regular(3, radius=1.1) + np.array([0.0, 0.15])
    if shape == "star":
        return _star()
    if shape == "ring":
        return _ring_keyhole()
    if shape == "cross":
        return _cross()
    if shape == "hexagon":
        return _regular(6, start=0.0)
    if shape == "diamond":
        return np.array([[0.0, -1.0], [0.62, 0.0], [0.0, 1.0], [-0.62, 0.0]])
    if shape == "pentagon":
        return _regular(5) + np.array([0.0, 0.1])
    raise ValueError(f"unknown shape {shape!r}; allowed: {', '.join(SHAPES)}")


def polygon_area(poly: np.ndarray) -> float:
    """Shoelace area of a closed polygon (V, 2); a keyhole ring gives outer minus inner."""
    x, y = poly[:, 0], poly[:, 1]
    return float(abs(np.dot(x, np.roll(y, -1)) - np.dot(y, np.roll(x, -1))) / 2.0)


# ----------------------------------------------------------------------------------- textures


def _lighter(rgb: np.ndarray, t: float) -> np.ndarray:
    return rgb + (255.0 - rgb) * t


def pattern_texture(
    pattern: str,
    u: np.ndarray,
    v: np.ndarray,
    base: np.ndarray,
    radius: float,
    phase: float,
) -> np.ndarray:
    """Colour of a pattern at object-frame coordinates.

    Args:
        pattern: one of :data:`PATTERNS`.
        u, v: (h, w) coordinates in pixels in the object's own (rotated) frame, origin at its
            centre; the pattern turns with the object.
        base: (3,) float RGB of this instance's colour.
        radius: object radius in pixels; the pattern period scales with it so that small objects
            still show a few periods.
        phase: in [0, 1), shifts stripes/checks/dots so instances are not all aligned alike.

    Returns:
        (h, w, 3) float32 RGB in [0, 255].
    """
    dark, light = base * 0.4, _lighter(base, 0.6)
    period = max(4.0, 0.5 * radius)
    if pattern == "solid":
        return np.broadcast_to(base, u.shape + (3,)).astype(np.float32)
    if pattern == "stripes":
        on = np.floor(u / period + phase) % 2 == 0
        return np.where(on[..., None], base, light).astype(np.float32)
    if pattern == "checks":
        cells = np.floor(u / period + phase) + np.floor(v / period + phase)
        return np.where((cells % 2 == 0)[..., None], base, dark).astype(np.float32)
    if pattern == "dots":
        # dot where the distance to the nearest lattice point is under 0.3 period
        fu = (u / period + phase) % 1.0 - 0.5
        fv = (v / period + phase) % 1.0 - 0.5
        on = fu * fu + fv * fv < 0.3**2
        return np.where(on[..., None], dark, base).astype(np.float32)
    if pattern == "gradient":
        t = np.clip((u / radius + 1.0) / 2.0, 0.0, 1.0)[..., None]  # 0 at the left edge, 1 right
        return ((1.0 - t) * dark + t * light).astype(np.float32)
    raise ValueError(f"unknown pattern {pattern!r}; allowed: {', '.join(PATTERNS)}")
