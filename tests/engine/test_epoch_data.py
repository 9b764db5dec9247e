"""SamplerEpochData: batches of a sampler epoch, the batch's alpha, skipped images, resume."""

from __future__ import annotations

import torch

from drcl.engine.epoch_data import SamplerEpochData


class Sampler(torch.utils.data.Sampler):
    """A seeded permutation per epoch that resumes after ``consumed`` samples (as DRB's)."""

    def __init__(self, n: int) -> None:
        self.n, self.epoch, self.alpha, self.start = n, 0, 0.0, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch, self.start = epoch, 0

    def set_progress(self, progress: float) -> None:
        self.alpha = progress

    def __iter__(self):
        order = torch.randperm(self.n, generator=torch.Generator().manual_seed(self.epoch))
        return iter(order[self.start :].tolist())

    def __len__(self) -> int:
        return self.n - self.start

    def state_dict(self, consumed: int) -> dict:
        return {"epoch": self.epoch, "consumed": consumed}

    def load_state_dict(self, state: dict) -> None:
        self.epoch, self.start = state["epoch"], state["consumed"]


class Data(torch.utils.data.Dataset):
    def __len__(self) -> int:
        return 10

    def __getitem__(self, i: int) -> dict:
        skipped = i if i == 3 else -1  # image 3 was unreadable and replaced
        return {
            "x": torch.tensor(i),
            "skipped_id": torch.tensor(skipped),
            "alpha": torch.tensor(0.25),
        }


def _collate(samples: list[dict]) -> dict:
    return {k: torch.stack([s[k] for s in samples]) for k in samples[0]}


def _data() -> SamplerEpochData:
    return SamplerEpochData(
        Data(), Sampler(10), batch_per_rank=3, iters_per_epoch=3, collate_fn=_collate
    )


def test_an_epoch_gives_full_batches_its_alpha_and_the_skipped_images():
    data = _data()
    batches = list(data.batches(epoch=1, progress=0.5))
    assert len(batches) == 3  # 10 samples, batch 3: the last partial batch is dropped
    assert all(set(b) == {"x"} for b in batches)  # alpha and skipped_id are taken out
    seen = torch.cat([b["x"] for b in batches]).tolist()
    order = torch.randperm(10, generator=torch.Generator().manual_seed(1)).tolist()
    assert seen == order[:9]
    logs = data.logs()
    assert logs["alpha"] == 0.25  # the alpha the batch was drawn with, not the sampler's 0.5
    assert logs.get("skipped_images") == (1 if 3 in seen else None)


def test_state_dict_resumes_inside_an_epoch():
    full = [b["x"].tolist() for b in _data().batches(0, 0.0)]
    first = _data()
    stream = first.batches(0, 0.0)
    next(stream)
    state = first.state_dict()
    assert state == {"epoch": 0, "consumed": 3}
    second = _data()
    second.load_state_dict(state)
    rest = [b["x"].tolist() for b in second.batches(0, 0.0)]
    assert rest == full[1:]
    # another epoch than the restored one starts at its beginning
    third = _data()
    third.load_state_dict(state)
    assert len(list(third.batches(1, 0.0))) == 3
