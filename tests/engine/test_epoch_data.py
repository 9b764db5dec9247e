"""SamplerEpochData: an endless stream over sampler epochs that owns the run's position (the
trainer's iteration), the alpha of the schedule, skipped images and resume."""

from __future__ import annotations

import pytest
import torch

from drcl.engine.epoch_data import SamplerEpochData
from drcl.engine.schedule import Schedule
from drcl.utils.errors import NoBatchError


class Sampler(torch.utils.data.Sampler):
    """A seeded permutation per epoch that resumes after ``consumed`` samples (as DRB's); its
    alpha is the progress it was given when an epoch began (as the epoch-list DRB sampler)."""

    def __init__(self, n: int) -> None:
        self.n, self.epoch, self.alpha, self.start = n, 0, 0.0, 0
        self.progress_seen: list[float] = []

    def set_epoch(self, epoch: int) -> None:
        if epoch != self.epoch:
            self.start = 0
        self.epoch = epoch

    def set_progress(self, progress: float) -> None:
        self.alpha = progress
        self.progress_seen.append(progress)

    def __iter__(self):
        order = torch.randperm(self.n, generator=torch.Generator().manual_seed(self.epoch))
        start, self.start = self.start, 0
        return iter(order[start:].tolist())

    def __len__(self) -> int:
        return self.n - self.start

    def state_dict(self, consumed: int) -> dict:
        return {"epoch": self.epoch, "consumed": consumed}

    def load_state_dict(self, state: dict) -> None:
        self.epoch, self.start = state["epoch"], state["consumed"]


class Data(torch.utils.data.Dataset):
    def __init__(self, n: int = 10) -> None:
        self.n = n

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> dict:
        skipped = i if i == 3 else -1  # image 3 was unreadable and replaced
        return {"x": torch.tensor(i), "skipped_id": torch.tensor(skipped)}


def _collate(samples: list[dict]) -> dict:
    return {k: torch.stack([s[k] for s in samples]) for k in samples[0]}


def _linear(p: float) -> float:
    return p


def _data(n=10, max_iters=8, accumulate=1, alpha_per="iteration", alpha=_linear):
    schedule = Schedule(max_iters, 3, accumulate, alpha, alpha_per)
    return SamplerEpochData(Data(n), Sampler(n), 3, schedule, _collate)


def _take(stream, k: int) -> list[list[int]]:
    return [next(stream)["x"].tolist() for _ in range(k)]


def _order(epoch: int) -> list[int]:
    return torch.randperm(10, generator=torch.Generator().manual_seed(epoch)).tolist()


def test_the_stream_goes_through_epochs_and_notes_skipped_images():
    data = _data()
    stream = data.batches()
    got = _take(stream, 6)  # 10 samples, batch 3: 3 full batches an epoch, the rest dropped
    assert sum(got[:3], []) == _order(0)[:9] and sum(got[3:], []) == _order(1)[:9]
    assert (data.position, data.iteration, data.sampler.epoch) == (6, 6, 1)
    assert data.logs()["skipped_images"] == 1  # image 3 was in both epochs


def test_logged_alpha_is_the_schedules_of_the_last_batchs_iteration():
    # accumulate 2: micro-batches 0,1 -> iteration 0, 2,3 -> iteration 1, ...; max_iters 5:
    # alpha(g) = g / (5 - 1) with the linear curve
    data = _data(max_iters=5, accumulate=2)
    stream = data.batches()
    alphas = []
    for _ in range(6):
        next(stream)
        alphas.append(data.logs()["alpha"])
    assert alphas == [0.0, 0.0, 0.25, 0.25, 0.5, 0.5]
    assert data.iteration == 3


def test_epoch_mode_fixes_alpha_at_each_epochs_first_iteration():
    data = _data(max_iters=8, alpha_per="epoch")
    stream = data.batches()
    _take(stream, 4)  # epoch 0 (iterations 0-2), then epoch 1 begins at iteration 3
    assert data.sampler.progress_seen == [0.0, 3 / 8]
    assert data.logs()["alpha"] == 3 / 8


def test_no_alpha_is_logged_without_an_alpha_schedule():
    data = _data(alpha=None)
    next(data.batches())
    assert "alpha" not in data.logs()


def test_state_dict_resumes_inside_an_epoch_and_into_the_next():
    full = _take(_data().batches(), 5)
    first = _data()
    stream = first.batches()
    _take(stream, 1)
    state = first.state_dict()
    assert state == {"epoch": 0, "consumed": 3, "position": 1}
    second = _data()
    second.load_state_dict(state)
    assert second.iteration == 1
    assert _take(second.batches(), 4) == full[1:]


def test_a_restored_epoch_that_is_used_up_continues_with_the_next():
    first = _data()
    _take(first.batches(), 3)  # the whole of epoch 0
    second = _data()
    second.load_state_dict(first.state_dict())
    assert sum(_take(second.batches(), 3), []) == _order(1)[:9]


def test_an_empty_training_set_is_a_no_batch_error():
    with pytest.raises(NoBatchError, match="produced no batch"):
        next(_data(n=2).batches())  # 2 samples < batch 3: drop_last leaves nothing


def test_a_state_without_position_is_refused():
    with pytest.raises(ValueError, match="no 'position'"):
        _data().load_state_dict({"epoch": 0, "consumed": 3})


def test_a_resumed_epoch_leaves_the_global_rng_where_the_checkpoint_put_it():
    # the uninterrupted run drew its loader's base seed when the epoch began, long before;
    # the model's own draws (RPN / RoI sampling) must continue from the checkpoint's RNG state
    first = _data()
    stream = first.batches()
    _take(stream, 1)
    state = first.state_dict()
    after_one = torch.get_rng_state()
    _take(stream, 1)  # inside the epoch: no draw
    assert torch.equal(torch.get_rng_state(), after_one)
    resumed = _data()
    resumed.load_state_dict(state)
    torch.set_rng_state(after_one)
    _take(resumed.batches(), 1)
    assert torch.equal(torch.get_rng_state(), after_one)
    fresh = _data()
    _take(fresh.batches(), 1)  # a new epoch's loader does draw its seed
    assert not torch.equal(torch.get_rng_state(), after_one)
