"""What LCL contrasts: class composition of the selected boxes, counted during pre-training.

Per logging interval, the share of rare, common and frequent boxes among the boxes with a known
class, and the normalised entropy of their class histogram, ``H = -sum_c p_c log p_c / log C``
(1 = every one of the C classes equally often, 0 = one class only). Pre-training logs
``box_share_r|c|f``, ``box_entropy`` and ``boxes_known`` in ``metrics.jsonl`` (boxes valid in both
views of the batches of each logging interval, rank 0). The figure, the simulation and the CLI
are in :mod:`drcl.analysis.box_composition` and :mod:`drcl.analysis.runner`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from drcl.engine.hooks import HookBase
from drcl.models.batch import PretrainBatch

KEYS = ("box_share_r", "box_share_c", "box_share_f", "box_entropy", "boxes_known")


def composition(counts: np.ndarray, groups: Sequence[str]) -> dict[str, float]:
    """Shares per frequency group and normalised entropy of a class histogram.

    Args:
        counts: (C + 1,) boxes per label; index 0 (unknown class) is ignored.
        groups: (C + 1,) ``'r'``/``'c'``/``'f'`` per label (index 0 unused).

    Returns:
        ``box_share_r|c|f`` (fractions of the known boxes), ``box_entropy`` in [0, 1] and
        ``boxes_known``; shares and entropy are NaN when no box has a known class.
    """
    known = np.asarray(counts[1:], dtype=np.float64)
    total = float(known.sum())
    out: dict[str, float] = {"boxes_known": total}
    g = np.asarray(groups[1:])
    for key in "rcf":
        out[f"box_share_{key}"] = float(known[g == key].sum() / total) if total else math.nan
    num_classes = len(known)
    if not total or num_classes < 2:
        out["box_entropy"] = math.nan if not total else 0.0
        return out
    p = known[known > 0] / total
    out["box_entropy"] = float(-(p * np.log(p)).sum() / math.log(num_classes))
    return out


class BoxCompositionMeter:
    """Counts the classes of contrasted boxes between two logging steps.

    Args:
        groups: (C + 1,) frequency group per label (``'r'``, ``'c'``, ``'f'``; index 0 unused).
    """

    def __init__(self, groups: Sequence[str]) -> None:
        self.groups = list(groups)
        self.counts = np.zeros(len(self.groups), dtype=np.int64)

    def update(self, labels: torch.Tensor) -> None:
        """``labels``: (n,) int labels of the boxes contrasted in a batch (<= 0: unknown)."""
        lab = labels.detach().cpu().reshape(-1).numpy()
        lab = lab[lab > 0]
        if len(lab):
            self.counts += np.bincount(lab, minlength=len(self.counts))[: len(self.counts)]

    def summary(self) -> dict[str, float]:
        """The composition since the last call (then reset); {} when nothing was counted."""
        if not self.counts[1:].any():
            return {}
        out = composition(self.counts, self.groups)
        self.counts[:] = 0
        return out


class BoxCompositionHook(HookBase):
    """Logs the composition of the boxes LCL contrasts (``box_share_*``, ``box_entropy``,
    ``boxes_known``): the boxes valid in both views of the batches since the last log row.

    Args:
        groups: (C + 1,) frequency group per label (:func:`label_groups`).
    """

    def __init__(self, groups: Sequence[str]) -> None:
        self.meter = BoxCompositionMeter(groups)

    def on_batch(self, batch: PretrainBatch) -> None:
        self.meter.update(batch.box_labels[batch.box_valid.bool()])

    def logs(self) -> dict[str, float]:
        return self.meter.summary()


def label_groups(index: Any) -> list[str]:
    """(C + 1,) group per label from a :class:`~drcl.data.coco.CocoIndex` (index 0: '')."""
    by_cat = index.frequency_groups()
    return [""] + [by_cat[index.label_to_cat_id[lab]] for lab in range(1, index.num_classes + 1)]
