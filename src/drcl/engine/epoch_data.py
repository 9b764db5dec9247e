"""Epoch data for the :class:`~drcl.engine.trainer.Trainer`: a sampler, a dataset, a DataLoader.

The object's own ``state_dict`` (the sampler's epoch, seed and samples consumed, and the
micro-batches handed to the loop) is the one record of where the run stands: the trainer's
iteration is derived from it (:attr:`SamplerEpochData.position`), so there is no second copy of
the epoch or the iteration to reconcile on resume.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import torch

from drcl.engine.schedule import Schedule
from drcl.utils.errors import NoBatchError


class SamplerEpochData:
    """Feeds the :class:`~drcl.engine.trainer.Trainer` from a sampler, epoch after epoch.

    Counts the batches handed to the loop, so its ``state_dict`` says exactly where the stream
    stands even though DataLoader workers prefetch ahead; after ``load_state_dict`` the next
    ``batches`` call continues that epoch where it stopped.

    Args:
        dataset: indexed by what ``sampler`` yields; a batch says which images it replaced
            (``skipped_ids``, or a ``skipped_id`` tensor in a dict batch).
        sampler: a :class:`~drcl.sampling.drb.DynamicRebalancingSampler` or
            :class:`~drcl.sampling.progressive.ProgressiveDRBSampler` (``set_epoch``,
            ``state_dict(consumed=)``, ``load_state_dict``; ``set_progress`` and ``alpha`` with
            ``schedule.alpha_per == "epoch"``).
        batch_per_rank: samples per batch on this process.
        schedule: the run's :class:`~drcl.engine.schedule.Schedule`, shared with the sampler and
            the trainer (``iters_per_epoch`` sizes checkpoints; its alpha is logged).
        collate_fn: list of samples -> batch.
        num_workers: DataLoader workers.
        pin_memory: page-locked batches, so that copies to a GPU run asynchronously
            (``to_device`` uses ``non_blocking``); for CUDA runs.
    """

    def __init__(
        self,
        dataset: torch.utils.data.Dataset,
        sampler: Any,
        batch_per_rank: int,
        schedule: Schedule,
        collate_fn: Callable[[list[Any]], Any],
        num_workers: int = 0,
        pin_memory: bool = False,
    ):
        self.dataset, self.sampler, self.schedule = dataset, sampler, schedule
        self.pin_memory = pin_memory
        self.batch, self.iters_per_epoch = batch_per_rank, schedule.iters_per_epoch
        self.num_workers, self.collate_fn = num_workers, collate_fn
        self.position = 0  # micro-batches handed to the loop since the run began
        self._consumed = 0  # of them, in the sampler's current epoch
        self._started = False  # an epoch is under way (restored, or begun by batches())
        self._resumed = False  # the epoch under way was restored by load_state_dict
        self.skipped_ids: set[int] = set()  # broken images replaced under data.on_error=skip

    @property
    def iteration(self) -> int:
        """Optimizer steps done: ``position // accumulate`` (the trainer's iteration)."""
        return self.schedule.iteration_of(self.position)

    def batches(self) -> Iterator[Any]:
        """Endless batches on this rank, epoch after epoch, from the current position.

        Raises:
            NoBatchError: a newly begun epoch gives no batch (an empty training set).
        """
        if not self._started:
            self._begin_epoch(0)
        resumed, self._resumed = self._resumed, False  # a restored epoch may be used up already
        while True:
            produced = False
            for batch in self._epoch(resumed):
                produced = True
                self._consumed += 1
                self.position += 1
                yield self._note_skips(batch)
            if not produced and not resumed:
                raise NoBatchError(
                    "the training data produced no batch",
                    hint="is the training set empty, or was every image skipped "
                    "(data.on_error=skip)? run `drcl data check` on data.train_ann",
                )
            resumed = False
            self._begin_epoch(self.sampler.epoch + 1)

    def _epoch(self, resumed: bool) -> Iterator[Any]:
        """The batches of the sampler's epoch (its rest, after a resume).

        A DataLoader draws its base seed from the global torch RNG when it starts; the run
        that was not interrupted started this epoch's loader long before, so a resumed one starts
        its loader without that draw, and the model's random draws (RPN / RoI sampling) continue
        exactly where the checkpoint left them.
        """
        if not resumed:
            return iter(self._loader())
        with torch.random.fork_rng(devices=[]):
            return iter(self._loader())

    def _begin_epoch(self, epoch: int) -> None:
        if self.schedule.alpha_per == "epoch":  # the epoch-list sampler fixes alpha now
            self.sampler.set_progress(self.schedule.progress(self.iteration))
        self.sampler.set_epoch(epoch)
        self._consumed, self._started = 0, True

    def _loader(self) -> torch.utils.data.DataLoader:
        return torch.utils.data.DataLoader(
            self.dataset,
            batch_size=self.batch,
            sampler=self.sampler,
            num_workers=self.num_workers,
            collate_fn=self.collate_fn,
            drop_last=True,
            pin_memory=self.pin_memory,
        )

    def _note_skips(self, batch: Any) -> Any:
        if isinstance(batch, dict):
            ids = batch.pop("skipped_id").tolist()
        else:
            ids = batch.skipped_ids
        self.skipped_ids.update(int(i) for i in ids if i >= 0)
        return batch

    def to_device(self, batch: Any, device: torch.device) -> Any:
        if isinstance(batch, dict):
            return {k: v.to(device, non_blocking=True) for k, v in batch.items()}
        if hasattr(batch, "to"):
            return batch.to(device, non_blocking=True)
        return batch

    def alpha(self) -> float | None:
        """The alpha the last batch handed to the loop was drawn with (None: no alpha)."""
        s = self.schedule
        if s.alpha_per == "epoch":
            return float(self.sampler.alpha)  # fixed when the epoch began
        if s.alpha is None:
            return None
        # workers may prefetch ahead: the batch's iteration, not the sampler's, decides
        return s.alpha_of_iteration(s.iteration_of(max(self.position - 1, 0)))

    def logs(self) -> dict[str, float]:
        alpha = self.alpha()
        out = {} if alpha is None else {"alpha": alpha}
        if self.skipped_ids:
            out["skipped_images"] = len(self.skipped_ids)
        return out

    def skip_report(self, index: Any) -> str | None:
        """One line per broken image skipped during training (``data.on_error=skip``)."""
        if not self.skipped_ids:
            return None
        lines = [f"skipped {len(self.skipped_ids)} unreadable image(s) (data.on_error=skip):"]
        for iid in sorted(self.skipped_ids):
            rec = index.images[iid]
            lines.append(f"  image {iid}: {rec.get('file_name') or rec.get('coco_url')}")
        return "\n".join(lines)

    def state_dict(self) -> dict[str, Any]:
        state = self.sampler.state_dict(consumed=self._consumed * self.batch)
        return {**state, "position": self.position}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue where ``state`` stood; a state of before ``position`` was recorded cannot
        say where the run stands and is refused."""
        if "position" not in state:
            raise ValueError(
                "data state: no 'position' (a checkpoint of an older drcl); start a new run"
            )
        self.sampler.load_state_dict(state)
        self._consumed = int(state["consumed"]) // self.batch
        self.position = int(state["position"])
        self._started = self._resumed = True
