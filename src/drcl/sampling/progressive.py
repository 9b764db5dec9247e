"""DRB with alpha updated every iteration (``pretrain.drb.alpha_update: iteration``, the default).

The epoch-list sampler (:class:`~drcl.sampling.drb.DynamicRebalancingSampler`) fixes alpha when an
epoch's list is built, so a cosine schedule becomes a staircase of one value per sampler epoch.
Here every (micro-)batch is drawn with the alpha of its own optimizer iteration ``g``:

* ``alpha_g = alpha(p_g)``, ``p_g = g / (max_iters - 1)`` so the last iteration uses ``alpha_end``
  (:meth:`drcl.engine.schedule.Schedule.alpha_of_iteration`: the schedule the trainer shares);
* each image of the batch is drawn i.i.d. with ``P(i) ∝ w_i(alpha_g)``,
  ``w_i(a) = (1 - a) r_i^img + a r_i^inst``.

Because ``w_i`` is linear in ``alpha``, ``P(i)`` is a two-component mixture of the fixed
distributions ``r^img / S_img`` and ``r^inst / S_inst`` (``S = sum of factors``) with weight
``q = a S_inst / ((1 - a) S_img + a S_inst)`` on the instance one. A draw is therefore one
Bernoulli(q) and one binary search in a precomputed cumulative sum: O(B log N) per batch, no epoch
list to build, whatever N.

Every micro-batch ``m`` is drawn from its own generator seeded by ``(seed, m)``, so the stream is
deterministic per seed, independent of how it was cut into epochs, and resuming needs only ``m``.
An "epoch" is ``iters_per_epoch`` micro-batches (N images globally), so epochs have a fixed length.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
from torch.utils.data import Sampler

from drcl.config.schema import DRBConfig
from drcl.engine.schedule import Schedule
from drcl.sampling.drb import DRBSample, RepeatFactors


class ProgressiveDRBSampler(Sampler):
    """DRB sampler whose alpha follows the optimizer iteration of each batch.

    Args:
        image_factors: (N,) ``r_i^img``.
        instance_factors: (N,) ``r_i^inst`` (default: ``image_factors``).
        batch_per_rank: images per micro-batch on one rank.
        schedule: the run's :class:`~drcl.engine.schedule.Schedule` (``max_iters``,
            ``iters_per_epoch`` micro-batches per sampler epoch, ``accumulate``, the alpha curve
            of ``pretrain.drb``: :func:`~drcl.sampling.drb.alpha_curve`).
        seed: as ``train.seed``.
        num_replicas, rank: DDP sharding; rank ``r`` takes positions ``r::R`` of each global batch.
    """

    def __init__(
        self,
        image_factors: np.ndarray,
        instance_factors: np.ndarray | None = None,
        *,
        batch_per_rank: int,
        schedule: Schedule,
        seed: int = 0,
        num_replicas: int = 1,
        rank: int = 0,
    ) -> None:
        img = np.asarray(image_factors, dtype=np.float64)
        inst = img if instance_factors is None else np.asarray(instance_factors, np.float64)
        _validate(img, inst, batch_per_rank)
        if schedule.alpha is None or schedule.alpha_per != "iteration":
            raise ValueError("ProgressiveDRBSampler: needs a schedule with an alpha per iteration")
        if num_replicas < 1 or not 0 <= rank < num_replicas:
            raise ValueError(f"rank {rank} / num_replicas {num_replicas}: need 0 <= rank < n")
        self.image_factors, self.instance_factors = img, inst
        self._cdf_img, self._cdf_inst = np.cumsum(img), np.cumsum(inst)
        self.batch, self.schedule, self.seed = batch_per_rank, schedule, int(seed)
        self.ipe = schedule.iters_per_epoch
        self.num_replicas, self.rank = num_replicas, rank
        self.epoch, self._skip, self._yielded = 0, 0, 0

    # -- schedule -------------------------------------------------------------------------------
    @property
    def max_iters(self) -> int:
        """Optimizer steps of the run (the schedule's)."""
        return self.schedule.max_iters

    def alpha_of_micro_batch(self, micro_batch: int) -> float:
        """The alpha of global micro-batch ``m``: that of its optimizer iteration (schedule)."""
        return self.schedule.alpha_of_iteration(self.schedule.iteration_of(micro_batch))

    def mixture_weight(self, alpha: float) -> float:
        """``q``: probability that a draw comes from the instance-level distribution."""
        s_img, s_inst = (1.0 - alpha) * self._cdf_img[-1], alpha * self._cdf_inst[-1]
        return float(s_inst / (s_img + s_inst)) if s_img + s_inst > 0 else 0.0

    def weights(self, alpha: float) -> np.ndarray:
        """(N,) ``w_i(alpha)``; the draw probabilities are these divided by their sum."""
        return (1.0 - alpha) * self.image_factors + alpha * self.instance_factors

    def set_epoch(self, epoch: int) -> None:
        """Start sampler epoch ``epoch`` (the same epoch again keeps its resume position)."""
        if int(epoch) != self.epoch:
            self._skip = self._yielded = 0
        self.epoch = int(epoch)

    # -- drawing --------------------------------------------------------------------------------
    def draw_global_batch(self, micro_batch: int) -> tuple[np.ndarray, np.ndarray, float]:
        """The global micro-batch ``m``: ``(indices (B*R,), sample seeds (B*R,), alpha)``."""
        alpha = self.alpha_of_micro_batch(micro_batch)
        n = self.batch * self.num_replicas
        rng = np.random.default_rng([self.seed, int(micro_batch)])
        from_inst = rng.random(n) < self.mixture_weight(alpha)
        u = rng.random(n)
        idx_img = np.searchsorted(self._cdf_img, u * self._cdf_img[-1], side="right")
        idx_inst = np.searchsorted(self._cdf_inst, u * self._cdf_inst[-1], side="right")
        indices = np.where(from_inst, idx_inst, idx_img).clip(max=len(self._cdf_img) - 1)
        seeds = rng.integers(0, 2**63 - 1, size=n, dtype=np.int64)
        return indices.astype(np.int64), seeds, alpha

    def __len__(self) -> int:
        """Indices the next ``__iter__`` yields on this rank (after a resume: what is left)."""
        return self.ipe * self.batch - self._skip

    def __iter__(self) -> Iterator[DRBSample]:
        first = self.epoch * self.ipe + self._skip // self.batch
        offset = self._skip % self.batch
        self._yielded = self._skip
        return self._stream(first, offset)

    def _stream(self, first: int, offset: int) -> Iterator[DRBSample]:
        for m in range(first, (self.epoch + 1) * self.ipe):
            indices, seeds, alpha = self.draw_global_batch(m)
            mine = slice(self.rank, None, self.num_replicas)
            for i, s in list(zip(indices[mine].tolist(), seeds[mine].tolist(), strict=True))[
                offset:
            ]:
                self._yielded += 1
                yield DRBSample(i, alpha, s)
            offset = 0
        self._skip = 0

    # -- checkpointing --------------------------------------------------------------------------
    def state_dict(self, consumed: int | None = None) -> dict[str, Any]:
        """Where this rank's stream stands; ``consumed``: indices of the current epoch used."""
        return {
            "kind": "progressive",
            "seed": self.seed,
            "epoch": self.epoch,
            "consumed": self._yielded if consumed is None else int(consumed),
            "num_replicas": self.num_replicas,
            "num_images": len(self.image_factors),
            "max_iters": self.max_iters,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Resume: the next ``__iter__`` continues after ``state['consumed']`` indices."""
        if state.get("kind") != "progressive":
            raise ValueError(
                "sampler state: the checkpoint was written by the epoch-list DRB sampler "
                "(pretrain.drb.alpha_update=epoch); resume with that setting"
            )
        for key in ("seed", "num_replicas", "num_images", "max_iters"):
            mine = len(self.image_factors) if key == "num_images" else getattr(self, key)
            if state[key] != mine:
                raise ValueError(
                    f"sampler state: {key} = {state[key]} in the checkpoint, {mine} here; "
                    "the stream cannot be continued exactly"
                )
        self.epoch = int(state["epoch"])
        self._skip = self._yielded = int(state["consumed"])

    @classmethod
    def from_config(
        cls, factors: RepeatFactors, cfg: DRBConfig, **kwargs: Any
    ) -> ProgressiveDRBSampler:
        """Build from :class:`RepeatFactors` and ``pretrain.drb`` (the alpha curve is the
        schedule's, :func:`~drcl.sampling.drb.alpha_curve`); ``enabled: false`` gives uniform
        sampling (all factors 1)."""
        ones = np.ones_like(factors.image)
        return cls(
            factors.image if cfg.enabled else ones,
            factors.instance if cfg.enabled else ones,
            **kwargs,
        )


def _validate(img: np.ndarray, inst: np.ndarray, batch: int) -> None:
    """Raise ValueError naming the argument that is wrong."""
    if img.ndim != 1 or img.shape != inst.shape or len(img) == 0:
        raise ValueError(
            "ProgressiveDRBSampler: image_factors and instance_factors must be non-empty (N,) "
            f"arrays of equal length, got {img.shape} and {inst.shape}"
        )
    if min(img.min(), inst.min()) < 0 or img.sum() <= 0 or inst.sum() <= 0:
        raise ValueError("ProgressiveDRBSampler: repeat factors must be >= 0 with a positive sum")
    if batch < 1:
        raise ValueError(f"ProgressiveDRBSampler: batch_per_rank must be >= 1, got {batch}")
