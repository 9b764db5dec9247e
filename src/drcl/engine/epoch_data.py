"""Epoch data for the :class:`~drcl.engine.trainer.Trainer`: a sampler, a dataset, a DataLoader.

The object's own ``state_dict`` (the sampler's epoch, seed and samples consumed) is the one
source of truth for where the stream stands; the trainer saves and restores it with each
checkpoint and never tells it what to skip.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import torch


class SamplerEpochData:
    """Feeds the :class:`~drcl.engine.trainer.Trainer` from a sampler, one epoch at a time.

    Counts the batches handed to the loop, so its ``state_dict`` says exactly where the stream
    stands even though DataLoader workers prefetch ahead; after ``load_state_dict`` the next
    ``batches`` call continues that epoch where it stopped.

    Args:
        dataset: indexed by what ``sampler`` yields; its samples carry ``skipped_id``.
        sampler: a :class:`~drcl.sampling.drb.DynamicRebalancingSampler` (``set_epoch``,
            ``set_progress``, ``state_dict(consumed=)``, ``load_state_dict``, ``alpha``).
        batch_per_rank: samples per batch on this process.
        iters_per_epoch: nominal batches per epoch (sizes the schedule and checkpoints).
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
        iters_per_epoch: int,
        collate_fn: Callable[[list[Any]], Any],
        num_workers: int = 0,
        pin_memory: bool = False,
    ):
        self.dataset, self.sampler = dataset, sampler
        self.pin_memory = pin_memory
        self.batch, self.iters_per_epoch = batch_per_rank, iters_per_epoch
        self.num_workers, self.collate_fn = num_workers, collate_fn
        self._consumed = 0
        self._restored = False
        self.skipped_ids: set[int] = set()  # broken images replaced under data.on_error=skip
        self._batch_alpha: float | None = None  # alpha the last consumed batch was drawn with

    def batches(self, epoch: int, progress: float) -> Iterator[Any]:
        """Batches of sampler epoch ``epoch`` (training ``progress`` in [0, 1] sets DRB's
        alpha); a restored position is continued, any other epoch starts at its beginning."""
        if not (self._restored and self.sampler.epoch == epoch):
            self.sampler.set_progress(progress)
            self.sampler.set_epoch(epoch)
            self._consumed = 0
        self._restored = False
        loader = torch.utils.data.DataLoader(
            self.dataset,
            batch_size=self.batch,
            sampler=self.sampler,
            num_workers=self.num_workers,
            collate_fn=self.collate_fn,
            drop_last=True,
            pin_memory=self.pin_memory,
        )
        for batch in loader:
            self._consumed += 1
            yield self._note_skips(batch)

    def _note_skips(self, batch: Any) -> Any:
        alpha = batch.pop("alpha", None)
        if alpha is not None:  # one value per batch: all its samples share an iteration
            self._batch_alpha = float(alpha[0])
        ids = batch.pop("skipped_id")
        self.skipped_ids.update(int(i) for i in ids.tolist() if i >= 0)
        return batch

    def to_device(self, batch: Any, device: torch.device) -> Any:
        if isinstance(batch, dict):
            return {k: v.to(device, non_blocking=True) for k, v in batch.items()}
        return batch

    def logs(self) -> dict[str, float]:
        # the alpha the last batch handed to the loop was drawn with (workers may prefetch ahead)
        alpha = self.sampler.alpha if self._batch_alpha is None else self._batch_alpha
        out = {"alpha": float(alpha)}
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
        return self.sampler.state_dict(consumed=self._consumed * self.batch)

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.sampler.load_state_dict(state)
        self._consumed = int(state["consumed"]) // self.batch
        self._restored = True
