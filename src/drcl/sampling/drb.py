"""Dynamic Rebalancing (DRB): image-level -> instance-level repeat factor sampling.

SPEC "DRB — dynamic rebalancing" (our formulation of the paper's "transitions from image-level to
instance-level resampling", 2DRCL abstract and Sec. 3):

* class factor ``r_c = max(1, sqrt(t / f_c))`` (LVIS repeat factor sampling, Gupta et al. 2019),
  once with ``f_c`` = fraction of training *images* containing class c (image level, RFS), once
  at instance level (``pretrain.drb.instance_factor``):

  - ``instance_rfs`` (default): the same formula with ``f_c`` = fraction of all labelled
    *instances* that are class c;
  - ``irfs``: instance-aware RFS (Yaman, Mahmud, Liu, "Instance-Aware Repeat Factor Sampling for
    Long-Tailed Object Detection", arXiv 2305.08069, 2023),
    ``r_c = max(1, sqrt(t / sqrt(f_c^img * f_c^inst)))``, the geometric mean of the two
    fractions;
* image factor ``r_i = max_{c in image i} r_c`` (1 for an image without labels);
* image weight ``w_i(alpha) = (1 - alpha) * r_i^img + alpha * r_i^inst``, ``alpha = alpha(p)`` a
  schedule over the training progress ``p`` in [0, 1];
* inside an image, ``K`` boxes drawn without replacement with ``P(b) ∝ r_b^alpha``.

Labels are the detection convention: contiguous ``1..C``; ``0`` or ``-1`` means "no class"
(an unlabeled proposal), which counts as factor 1 and never enters the frequencies.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np
import torch
from torch.utils.data import Sampler

from drcl.config.schema import DRBConfig

ALPHA_SCHEDULES = ("linear", "cosine", "step", "none")
INSTANCE_FACTORS = ("instance_rfs", "irfs")


@dataclass(frozen=True)
class RepeatFactors:
    """Repeat factors of a training set.

    Attributes:
        image: (N,) ``r_i^img``, from image frequencies.
        instance: (N,) ``r_i^inst``, from instance frequencies.
        class_image: (C + 1,) ``r_c`` from image frequencies; index = label, index 0 unused (1).
        class_instance: (C + 1,) instance-level ``r_c`` (``instance_rfs`` or ``irfs``); this is
            ``r_b`` for a box of class ``c`` in :func:`select_boxes`.
    """

    image: np.ndarray
    instance: np.ndarray
    class_image: np.ndarray
    class_instance: np.ndarray


def labels_to_csr(per_image: Sequence[Sequence[int]]) -> tuple[np.ndarray, np.ndarray]:
    """Per-image label lists -> ``(offsets (N + 1,), labels (M,))`` int64 CSR arrays."""
    lengths = np.fromiter((len(x) for x in per_image), dtype=np.int64, count=len(per_image))
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    labels = np.fromiter((c for x in per_image for c in x), dtype=np.int64, count=int(offsets[-1]))
    return offsets, labels


def _check_csr(offsets: np.ndarray, labels: np.ndarray, num_images: int) -> None:
    """Raise ValueError naming the field when the CSR arrays are inconsistent."""
    if offsets.ndim != 1 or labels.ndim != 1:
        raise ValueError("image_labels_csr: offsets and labels must be 1-D arrays")
    if len(offsets) != num_images + 1:
        raise ValueError(
            f"image_labels_csr: offsets has {len(offsets)} entries, expected num_images + 1 = "
            f"{num_images + 1}"
        )
    if offsets[0] != 0 or offsets[-1] != len(labels) or np.any(np.diff(offsets) < 0):
        raise ValueError(
            "image_labels_csr: offsets must start at 0, be non-decreasing and end at len(labels) "
            f"= {len(labels)}"
        )
    if not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(f"image_labels_csr: labels must be integers, got dtype {labels.dtype}")


def class_repeat_factors(frequency: np.ndarray, t: float) -> np.ndarray:
    """``r_c = max(1, sqrt(t / f_c))``; classes with ``f_c = 0`` get 1 (they are never sampled).

    Args:
        frequency: (C + 1,) fraction per label (index 0 ignored).
        t: RFS threshold (1e-3 for LVIS).

    Returns:
        (C + 1,) float64 factors, index 0 = 1.
    """
    freq = np.asarray(frequency, dtype=np.float64)
    factors = np.ones_like(freq)
    present = freq > 0
    factors[present] = np.maximum(1.0, np.sqrt(t / freq[present]))
    factors[0] = 1.0
    return factors


def _image_max(per_label: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    """Max of ``per_label`` over each image's segment; 1 for images with no labels.

    ``np.maximum.reduceat`` misbehaves on empty segments, so reduce over the non-empty ones only:
    between two consecutive non-empty starts there are no other elements.
    """
    num_images = len(offsets) - 1
    out = np.ones(num_images, dtype=np.float64)
    nonempty = np.diff(offsets) > 0
    if nonempty.any():
        out[nonempty] = np.maximum.reduceat(per_label, offsets[:-1][nonempty])
    return np.maximum(out, 1.0)


def repeat_factors_from_image_counts(
    image_labels_csr: tuple[np.ndarray, np.ndarray],
    num_images: int,
    t: float = 1e-3,
    num_classes: int | None = None,
    instance_factor: str = "instance_rfs",
) -> RepeatFactors:
    """Image- and instance-level repeat factors from per-image instance labels.

    Args:
        image_labels_csr: ``(offsets, labels)``; ``offsets``: (N + 1,) int, image i owns
            ``labels[offsets[i]:offsets[i + 1]]``; ``labels``: (M,) int, one entry per instance
            (repeats allowed), ``1..C``, values <= 0 mean unlabeled.
        num_images: N, the number of training images (images without labels included).
        t: RFS threshold.
        num_classes: C; default the largest label.
        instance_factor: ``instance_rfs`` (RFS on instance fractions) or ``irfs`` (geometric mean
            of image and instance fractions, Yaman et al. 2023).

    Returns:
        :class:`RepeatFactors`.
    """
    if instance_factor not in INSTANCE_FACTORS:
        raise ValueError(
            f"pretrain.drb.instance_factor: got {instance_factor!r}, allowed: {INSTANCE_FACTORS}"
        )
    offsets = np.asarray(image_labels_csr[0], dtype=np.int64)
    labels = np.asarray(image_labels_csr[1])
    _check_csr(offsets, labels, num_images)
    if t <= 0:
        raise ValueError(f"t (pretrain.drb.threshold) must be > 0, got {t}")
    labels = labels.astype(np.int64)
    top = int(labels.max()) if len(labels) else 0
    num_classes = top if num_classes is None else num_classes
    if top > num_classes:
        raise ValueError(f"image_labels_csr: label {top} exceeds num_classes = {num_classes}")
    labelled = labels > 0
    image_of = np.repeat(np.arange(num_images, dtype=np.int64), np.diff(offsets))
    # f_c^img: distinct (image, class) pairs per class / N
    # (np.unique hashes here, ~100x slower than sort + diff on a million keys)
    pairs = np.sort(image_of[labelled] * (num_classes + 1) + labels[labelled])
    pairs = pairs[np.concatenate(([True], pairs[1:] != pairs[:-1]))] if len(pairs) else pairs
    image_counts = np.bincount(pairs % (num_classes + 1), minlength=num_classes + 1)
    # f_c^inst: instances of class c / all labelled instances
    inst_counts = np.bincount(labels[labelled], minlength=num_classes + 1)
    f_img = image_counts / max(num_images, 1)
    f_inst = inst_counts / max(int(labelled.sum()), 1)
    class_img = class_repeat_factors(f_img, t)
    if instance_factor == "irfs":  # r_c = max(1, sqrt(t / sqrt(f_img * f_inst)))
        class_inst = class_repeat_factors(np.sqrt(f_img * f_inst), t)
    else:  # instance_rfs: r_c = max(1, sqrt(t / f_inst))
        class_inst = class_repeat_factors(f_inst, t)
    safe = np.where(labelled, labels, 0)  # index 0 has factor 1
    return RepeatFactors(
        image=_image_max(class_img[safe], offsets),
        instance=_image_max(class_inst[safe], offsets),
        class_image=class_img,
        class_instance=class_inst,
    )


def alpha_at(
    progress: float,
    schedule: str = "cosine",
    start: float = 0.0,
    end: float = 1.0,
    step_at: float = 0.5,
) -> float:
    """The DRB mixing weight ``alpha(p)``.

    ``linear``: ``a0 + (a1 - a0) p``; ``cosine``: ``a0 + (a1 - a0) (1 - cos(pi p)) / 2``;
    ``step``: ``a0`` for ``p < step_at``, else ``a1``; ``none``: ``a0`` always.

    Args:
        progress: training progress p, clipped to [0, 1].
        schedule: one of ``ALPHA_SCHEDULES``.
        start: a0 = alpha(0).
        end: a1 = alpha(1).
        step_at: switch point of ``step``.
    """
    p = min(max(float(progress), 0.0), 1.0)
    if schedule == "linear":
        return start + (end - start) * p
    if schedule == "cosine":
        return start + (end - start) * 0.5 * (1.0 - math.cos(math.pi * p))
    if schedule == "step":
        return start if p < step_at else end
    if schedule == "none":
        return start
    raise ValueError(
        f"pretrain.drb.schedule: unknown schedule {schedule!r}, allowed: {ALPHA_SCHEDULES}"
    )


def alpha_curve(cfg: DRBConfig) -> Callable[[float], float]:
    """``p -> alpha(p)`` of ``pretrain.drb`` (:func:`alpha_at`), for the run's schedule
    (:class:`drcl.engine.schedule.Schedule`); raises ValueError on an unknown schedule."""
    alpha_at(0.0, cfg.schedule)
    return functools.partial(
        alpha_at,
        schedule=cfg.schedule,
        start=cfg.alpha_start,
        end=cfg.alpha_end,
        step_at=cfg.step_at,
    )


def select_boxes(
    box_labels: torch.Tensor,
    k: int,
    alpha: float,
    class_factors: torch.Tensor | np.ndarray,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Draw up to ``k`` boxes without replacement, ``P(b) ∝ r_b^alpha`` at each draw.

    Args:
        box_labels: (B,) int labels; <= 0 means unlabeled (``r_b = 1``).
        k: boxes wanted (8 in the paper).
        alpha: exponent; 0 = uniform.
        class_factors: (C + 1,) instance-level class factors
            (:attr:`RepeatFactors.class_instance`).
        generator: torch generator, for determinism.

    Returns:
        (min(k, B),) int64 indices into ``box_labels``, ascending; all of them when ``B <= k``.
    """
    labels = torch.as_tensor(box_labels).long().reshape(-1)
    n = labels.numel()
    if n <= k:
        return torch.arange(n, dtype=torch.int64)
    factors = torch.as_tensor(class_factors, dtype=torch.float64)
    if int(labels.max()) >= len(factors):
        raise ValueError(
            f"select_boxes: box label {int(labels.max())} has no class factor "
            f"(class_factors has {len(factors)} entries)"
        )
    r_b = torch.where(labels > 0, factors[labels.clamp(min=0)], torch.ones((), dtype=torch.float64))
    chosen = torch.multinomial(r_b.pow(alpha), k, replacement=False, generator=generator)
    return chosen.sort().values


class DRBSample(NamedTuple):
    """What the sampler yields with ``with_context=True``: the dataset gets everything it needs
    to select boxes and draw views deterministically, independent of the DataLoader worker."""

    index: int
    alpha: float
    seed: int


class DynamicRebalancingSampler(Sampler):
    """Repeat factor sampler with the DRB image weight ``w_i(alpha)``, deterministic and sharded.

    Each epoch: ``n_i = floor(w_i) + Bernoulli(w_i - floor(w_i))`` copies of image ``i``
    (stochastic rounding, detectron2's ``RepeatFactorTrainingSampler``), shuffled with a generator
    seeded by ``(seed, epoch)``, padded by wrap-around (or truncated with ``drop_last``) to a
    multiple of ``num_replicas``, and rank ``r`` takes positions ``r::num_replicas``.
    ``alpha`` is fixed for an epoch when its list is first built, from the progress set by
    :meth:`set_progress`. With ``dynamic=False`` alpha stays ``alpha_start`` (0: plain image-level
    RFS, the fine-tuning sampler).
    """

    def __init__(
        self,
        image_factors: np.ndarray,
        instance_factors: np.ndarray | None = None,
        *,
        seed: int = 0,
        schedule: str = "cosine",
        alpha_start: float = 0.0,
        alpha_end: float = 1.0,
        step_at: float = 0.5,
        dynamic: bool = True,
        num_replicas: int = 1,
        rank: int = 0,
        drop_last: bool = False,
        with_context: bool = False,
    ) -> None:
        self.image_factors = np.asarray(image_factors, dtype=np.float64)
        inst = self.image_factors if instance_factors is None else instance_factors
        self.instance_factors = np.asarray(inst, dtype=np.float64)
        self._validate(schedule, num_replicas, rank)
        self.seed, self.schedule, self.step_at = int(seed), schedule, step_at
        self.alpha_start, self.alpha_end, self.dynamic = alpha_start, alpha_end, dynamic
        self.num_replicas, self.rank, self.drop_last = num_replicas, rank, drop_last
        self.with_context = with_context
        self.epoch, self.progress = 0, 0.0
        self._alpha: float | None = None  # frozen for the current epoch once its list exists
        self._skip = 0  # positions of this rank already consumed (resume)
        self._yielded = 0
        self._cache: tuple[np.ndarray, np.ndarray] | None = None

    def _validate(self, schedule: str, num_replicas: int, rank: int) -> None:
        if self.image_factors.ndim != 1 or self.image_factors.shape != self.instance_factors.shape:
            raise ValueError(
                "DynamicRebalancingSampler: image_factors and instance_factors must be (N,) "
                f"arrays of equal length, got {self.image_factors.shape} and "
                f"{self.instance_factors.shape}"
            )
        if (
            len(self.image_factors)
            and min(self.image_factors.min(), self.instance_factors.min()) < 0
        ):
            raise ValueError("DynamicRebalancingSampler: repeat factors must be >= 0")
        alpha_at(0.0, schedule)  # raises on an unknown schedule
        if num_replicas < 1 or not 0 <= rank < num_replicas:
            raise ValueError(f"rank {rank} / num_replicas {num_replicas}: need 0 <= rank < n")

    @classmethod
    def from_config(
        cls, factors: RepeatFactors, cfg: DRBConfig, seed: int = 0, **kwargs: Any
    ) -> DynamicRebalancingSampler:
        """Build from :class:`RepeatFactors` and a ``pretrain.drb`` config (``DRBConfig``).

        ``enabled: false`` gives a uniform sampler (every factor 1): the "no DRB" ablation.
        """
        ones = np.ones_like(factors.image)
        return cls(
            factors.image if cfg.enabled else ones,
            factors.instance if cfg.enabled else ones,
            seed=seed,
            schedule=cfg.schedule,
            alpha_start=cfg.alpha_start,
            alpha_end=cfg.alpha_end,
            step_at=cfg.step_at,
            **kwargs,
        )

    # -- schedule -------------------------------------------------------------------------------
    def set_epoch(self, epoch: int) -> None:
        """Start epoch ``epoch``: a new list, built with the alpha of the current progress."""
        # the same epoch again (e.g. right after a resume) keeps its list and resume position
        if int(epoch) != self.epoch:
            self._alpha, self._cache, self._skip, self._yielded = None, None, 0, 0
        self.epoch = int(epoch)

    def set_progress(self, progress: float) -> None:
        """Training progress p in [0, 1]; takes effect at the next epoch's list."""
        self.progress = float(progress)

    @property
    def alpha(self) -> float:
        """alpha of the current epoch (frozen once its list is built)."""
        if self._alpha is not None:
            return self._alpha
        if not self.dynamic:
            return self.alpha_start
        return alpha_at(
            self.progress, self.schedule, self.alpha_start, self.alpha_end, self.step_at
        )

    def weights(self, alpha: float) -> np.ndarray:
        """(N,) ``w_i(alpha) = (1 - alpha) r_i^img + alpha r_i^inst``."""
        return (1.0 - alpha) * self.image_factors + alpha * self.instance_factors

    def expected_len(self, alpha: float | None = None) -> float:
        """Expected indices per rank in an epoch, ``sum_i w_i(alpha) / R`` (before padding);
        it changes with alpha, so plan schedules in iterations or recompute per epoch."""
        a = self.alpha if alpha is None else alpha
        return float(self.weights(a).sum()) / self.num_replicas

    # -- epoch list -----------------------------------------------------------------------------
    def epoch_indices(self) -> np.ndarray:
        """The whole epoch's list (all ranks, padded), (L,) int64; cached for the epoch."""
        return self._epoch_lists()[0]

    def _epoch_lists(self) -> tuple[np.ndarray, np.ndarray]:
        if self._cache is None:
            self._alpha = self.alpha
            self._cache = self._build(self._alpha)
        return self._cache

    def _build(self, alpha: float) -> tuple[np.ndarray, np.ndarray]:
        """Stochastic rounding + shuffle + pad; separate streams so the index list does not
        depend on ``with_context`` (seeds are drawn from their own stream)."""
        w = self.weights(alpha)
        rng = np.random.default_rng([self.seed, self.epoch, 0])
        counts = np.floor(w).astype(np.int64) + (rng.random(len(w)) < w - np.floor(w))
        indices = rng.permutation(np.repeat(np.arange(len(w), dtype=np.int64), counts))
        indices = self._pad(indices)
        seeds = np.random.default_rng([self.seed, self.epoch, 1]).integers(
            0, 2**63 - 1, size=len(indices), dtype=np.int64
        )
        return indices, seeds

    def _pad(self, indices: np.ndarray) -> np.ndarray:
        """Equal count per rank: truncate (``drop_last``) or wrap around to a multiple of R."""
        r = self.num_replicas
        if self.drop_last:
            return indices[: len(indices) // r * r]
        total = math.ceil(len(indices) / r) * r
        if total == len(indices) or len(indices) == 0:
            return indices
        return np.resize(indices, total)  # np.resize repeats the array cyclically

    def __len__(self) -> int:
        """Indices the next ``__iter__`` yields on this rank (after a resume: what is left)."""
        return len(self._epoch_lists()[0]) // self.num_replicas - self._skip

    def __iter__(self) -> Iterator[int] | Iterator[DRBSample]:
        indices, seeds = self._epoch_lists()
        start = self.rank + self._skip * self.num_replicas
        mine = indices[start :: self.num_replicas].tolist()
        alpha = float(self._alpha)
        self._yielded = self._skip
        if self.with_context:
            mine_seeds = seeds[start :: self.num_replicas].tolist()
            return self._count(
                DRBSample(i, alpha, s) for i, s in zip(mine, mine_seeds, strict=True)
            )
        return self._count(iter(mine))

    def _count(self, it: Iterator[Any]) -> Iterator[Any]:
        for item in it:
            self._yielded += 1
            yield item
        self._skip = 0  # the resumed remainder is done; iterating again replays the whole epoch

    # -- checkpointing --------------------------------------------------------------------------
    def state_dict(self, consumed: int | None = None) -> dict[str, Any]:
        """Everything needed to continue this rank's stream exactly.

        Args:
            consumed: indices of the current epoch already used by the training loop on this rank.
                Default: what this sampler has yielded, which is exact with ``num_workers=0``;
                with DataLoader workers prefetching ahead, pass ``iteration * batch_per_rank``.
        """
        return {
            "seed": self.seed,
            "epoch": self.epoch,
            "progress": self.progress,
            "alpha": self.alpha,
            "consumed": self._yielded if consumed is None else int(consumed),
            "num_replicas": self.num_replicas,
            "num_images": len(self.image_factors),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Resume: the next ``__iter__`` continues after ``state['consumed']`` indices."""
        for key in ("seed", "num_replicas", "num_images"):
            mine = len(self.image_factors) if key == "num_images" else getattr(self, key)
            if state[key] != mine:
                raise ValueError(
                    f"sampler state: {key} = {state[key]} in the checkpoint, {mine} here; "
                    "the stream cannot be continued exactly"
                )
        self.epoch, self.progress = int(state["epoch"]), float(state["progress"])
        self._alpha, self._cache = float(state["alpha"]), None
        self._cache = self._build(self._alpha)
        self._skip = self._yielded = int(state["consumed"])
