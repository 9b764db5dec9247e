"""Shared plotting helpers: pyplot-free figures (no global backend state) saved atomically."""

from __future__ import annotations

import os
from pathlib import Path

from matplotlib.figure import Figure

from drcl.utils.io import atomic_write


def new_figure(width: float, height: float) -> Figure:
    """A matplotlib ``Figure`` rendered by Agg, independent of ``pyplot`` and its backend."""
    return Figure(figsize=(width, height), layout="constrained")


def save_figure(fig: Figure, out_png: str | os.PathLike, dpi: int = 120) -> Path:
    """Write ``fig`` as PNG atomically (temp file + rename); returns the path."""
    return atomic_write(out_png, lambda tmp: fig.savefig(tmp, format="png", dpi=dpi))
