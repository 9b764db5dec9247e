"""Per-class classifier weight norms against training frequency (the paper's first bias).

A softmax classifier trained on long-tailed data learns larger weight norms ||w_c|| for frequent
classes, which pushes rare-class scores down. The detector's classifier is torchvision's
``roi_heads.box_predictor.cls_score`` with ``C + 1`` rows, background at row 0 (plain or cosine
classifier, same key); the norm of row ``label`` is the class's norm, labels 1..C in sorted
category-id order.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import torch

from drcl.analysis.plotting import new_figure, save_figure
from drcl.data.groups import GROUP_COLORS, GROUP_NAMES
from drcl.utils.run_dir import MODEL_FINAL
from drcl.utils.weights import read_state_dict

CLS_KEY = "roi_heads.box_predictor.cls_score.weight"
RUN_DIR_WEIGHTS = MODEL_FINAL  # inside a fine-tuning run dir


def weights_file(path: str | os.PathLike) -> Path:
    """``path`` itself, or a fine-tuning run dir's ``model_final.safetensors``."""
    path = Path(path)
    return path / RUN_DIR_WEIGHTS if path.is_dir() else path


def classifier_weight(
    state: Mapping[str, torch.Tensor], source: str = "<state dict>"
) -> torch.Tensor:
    """The (C + 1, D) classifier weight; a ``module.`` (DDP) prefix is accepted."""
    for key in (CLS_KEY, "module." + CLS_KEY):
        if key in state:
            weight = state[key]
            if weight.ndim != 2:
                raise ValueError(f"{source}: '{key}' has shape {tuple(weight.shape)}, expected 2-D")
            return weight
    raise ValueError(f"{source}: no key '{CLS_KEY}' (is this a fine-tuned detector?)")


def classifier_weight_norms(
    path_or_state_dict: str | os.PathLike | Mapping[str, torch.Tensor],
    num_classes: int | None = None,
) -> np.ndarray:
    """L2 norm of every foreground class's classifier weight.

    Args:
        path_or_state_dict: a fine-tuning run dir (its ``model_final.safetensors``), a weights
            file (:func:`~drcl.utils.weights.read_state_dict`) or a state dict.
        num_classes: C, checked against the weight's ``C + 1`` rows when given.

    Returns:
        (C,) float64, entry ``label - 1`` = ||W[label]||_2; the background row 0 is dropped.
    """
    if isinstance(path_or_state_dict, Mapping):
        state, source = path_or_state_dict, "<state dict>"
    else:
        path = weights_file(path_or_state_dict)
        state, source = read_state_dict(path, role="checkpoint"), str(path)
    weight = classifier_weight(state, source).detach().to(torch.float64)
    if num_classes is not None and weight.shape[0] != num_classes + 1:
        raise ValueError(
            f"{source}: classifier has {weight.shape[0]} rows, expected {num_classes} classes "
            "+ background"
        )
    return torch.linalg.vector_norm(weight[1:], dim=1).numpy()


def _shade_groups(ax, x: np.ndarray, groups: np.ndarray) -> None:
    """Shade each group's x range [min, max] (x sorted ascending), padded half a step in log."""
    for g in ("r", "c", "f"):
        xs = x[groups == g]
        if len(xs):
            ax.axvspan(xs.min() / 1.2, xs.max() * 1.2, color=GROUP_COLORS[g], alpha=0.12, lw=0)
            mid = np.sqrt(xs.min() * xs.max())  # geometric middle on the log axis
            style = {"ha": "center", "va": "bottom", "fontsize": 8, "color": GROUP_COLORS[g]}
            ax.text(mid, 1.0, GROUP_NAMES[g], transform=ax.get_xaxis_transform(), **style)


def plot_weight_norms(
    runs: Mapping[str, np.ndarray],
    class_counts: np.ndarray,
    groups: Sequence[str],
    out_png: str | os.PathLike,
) -> Path:
    """Classifier weight norm against training instance count: dots per class, one line per run.

    Args:
        runs: ``{run name: (C,) norms}`` from :func:`classifier_weight_norms`.
        class_counts: (C,) training instances per class (entry ``label - 1``).
        groups: (C,) ``'r'|'c'|'f'`` per class; shaded in the background.
        out_png: PNG path, written atomically.

    Returns:
        The written path. Classes are sorted by instance count; the x axis is logarithmic
        (classes with 0 training instances are drawn at 0.5); the line joins the mean norm of
        the classes sharing a count.
    """
    counts, groups = np.asarray(class_counts, np.float64), np.asarray(groups)
    for name, norms in runs.items():
        if len(norms) != len(counts) or len(groups) != len(counts):
            raise ValueError(
                f"run {name!r}: {len(norms)} norms, {len(counts)} class counts, "
                f"{len(groups)} groups: they must match"
            )
    order = np.argsort(counts, kind="stable")
    x = np.maximum(counts[order], 0.5)
    fig = new_figure(7.0, 4.0)
    ax = fig.subplots()
    _shade_groups(ax, x, groups[order])
    for name, norms in runs.items():
        y = np.asarray(norms, np.float64)[order]
        dots = ax.scatter(x, y, s=10, alpha=0.6, label=name)
        ux, inverse = np.unique(x, return_inverse=True)  # one line point per count: mean norm
        mean = np.bincount(inverse, weights=y) / np.bincount(inverse)
        ax.plot(ux, mean, lw=1, color=dots.get_facecolor()[0][:3])
    ax.set_xscale("log")
    ax.set_xlabel("training instances of the class (log)")
    ax.set_ylabel("classifier weight norm ||w_c||")
    if runs:
        ax.legend(fontsize=8)
    return save_figure(fig, out_png)


def group_means(norms: np.ndarray, groups: Sequence[str]) -> dict[str, float]:
    """Mean norm per frequency group (NaN-free: a group without classes is left out)."""
    groups = np.asarray(groups)
    return {g: float(norms[groups == g].mean()) for g in ("r", "c", "f") if (groups == g).any()}
