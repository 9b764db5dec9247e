"""The per-iteration DRB sampler: alpha per batch, exact mixture, determinism, resume."""

from __future__ import annotations

import math

import numpy as np
import pytest

from drcl.config.schema import DRBConfig
from drcl.engine.schedule import Schedule
from drcl.sampling.drb import RepeatFactors, alpha_at, alpha_curve
from drcl.sampling.progressive import ProgressiveDRBSampler

IMG = np.array([1.0, 1.0, 2.0, 4.0, 1.0, 0.0])
INST = np.array([1.0, 3.0, 1.0, 6.0, 1.0, 2.0])


def schedule(max_iters=12, iters_per_epoch=5, accumulate=1, **drb) -> Schedule:
    """The run's schedule with the alpha curve of ``pretrain.drb`` (``DRBConfig`` fields)."""
    return Schedule(max_iters, iters_per_epoch, accumulate, alpha_curve(DRBConfig(**drb)))


def make(batch_per_rank=2, seed=3, num_replicas=1, rank=0, **sched) -> ProgressiveDRBSampler:
    return ProgressiveDRBSampler(
        IMG,
        INST,
        batch_per_rank=batch_per_rank,
        schedule=schedule(**sched),
        seed=seed,
        num_replicas=num_replicas,
        rank=rank,
    )


def alphas_per_batch(s: ProgressiveDRBSampler, epochs: int) -> list[float]:
    out = []
    for e in range(epochs):
        s.set_epoch(e)
        samples = list(s)
        assert len(samples) == s.ipe * s.batch
        for b in range(0, len(samples), s.batch):
            batch_alphas = {x.alpha for x in samples[b : b + s.batch]}
            assert len(batch_alphas) == 1  # one alpha per batch
            out.append(batch_alphas.pop())
    return out


def test_alpha_follows_the_schedule_every_iteration() -> None:
    s = make()
    got = alphas_per_batch(s, 3)[: s.max_iters]  # 3 epochs of 5 > 12 iterations
    want = [0.5 * (1 - math.cos(math.pi * g / 11)) for g in range(12)]
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-12)
    assert len(set(got)) == 12  # no staircase
    assert got[0] == 0.0 and got[-1] == pytest.approx(1.0, abs=1e-12)  # reaches alpha_end


def test_accumulation_shares_alpha_within_an_optimizer_step() -> None:
    s = make(accumulate=2, max_iters=5)
    got = alphas_per_batch(s, 2)[:10]
    want = [alpha_at(g / 4, "cosine") for g in range(5) for _ in range(2)]
    np.testing.assert_allclose(got, want, atol=1e-12)


def test_mixture_equals_normalised_drb_weights() -> None:
    s = make()
    for a in (0.0, 0.3, 0.77, 1.0):
        q = s.mixture_weight(a)
        mix = (1 - q) * IMG / IMG.sum() + q * INST / INST.sum()
        w = (1 - a) * IMG + a * INST
        np.testing.assert_allclose(mix, w / w.sum(), atol=1e-15)


def test_empirical_frequencies_match_weights() -> None:
    s = ProgressiveDRBSampler(
        IMG,
        INST,
        batch_per_rank=500,
        schedule=schedule(40, 40, schedule="none", alpha_start=0.4),
    )
    counts = np.bincount([x.index for x in s], minlength=len(IMG))
    w = s.weights(0.4)
    expected = w / w.sum() * counts.sum()
    # chi-square with 5 dof: 99.9% quantile is 20.5
    keep = expected > 0
    chi2 = float(((counts[keep] - expected[keep]) ** 2 / expected[keep]).sum())
    assert chi2 < 20.5, (counts, expected)


def test_zero_factor_images_are_never_drawn() -> None:
    s = make(schedule="none", alpha_start=0.0, iters_per_epoch=50)
    assert 5 not in {x.index for x in s}  # IMG[5] = 0


def test_deterministic_per_seed_and_independent_of_rank_split() -> None:
    a, b = list(make()), list(make())
    assert a == b
    assert [x.index for x in make(seed=4)] != [x.index for x in a]
    ranks = [list(make(batch_per_rank=1, num_replicas=2, rank=r)) for r in (0, 1)]
    interleaved = [x for pair in zip(*ranks, strict=True) for x in pair]
    assert interleaved == a  # rank r takes positions r::R of the same global batches


@pytest.mark.parametrize("consumed", [0, 4, 5, 10])
def test_resume_mid_epoch_continues_exactly(consumed: int) -> None:
    ref = make()
    ref.set_epoch(1)
    want = list(ref)
    run = make()
    run.set_epoch(1)
    it = iter(run)
    head = [next(it) for _ in range(consumed)]
    state = run.state_dict()
    assert state["consumed"] == consumed
    resumed = make()
    resumed.load_state_dict(state)
    resumed.set_epoch(1)
    assert head + list(resumed) == want


def test_bad_input_and_wrong_checkpoint_kind() -> None:
    with pytest.raises(ValueError, match="equal length"):
        ProgressiveDRBSampler(np.ones(3), np.ones(4), batch_per_rank=1, schedule=schedule())
    with pytest.raises(ValueError, match="max_iters"):
        make(max_iters=0)
    with pytest.raises(ValueError, match="unknown schedule"):
        make(schedule="bogus")
    with pytest.raises(ValueError, match="alpha per iteration"):
        ProgressiveDRBSampler(IMG, batch_per_rank=1, schedule=Schedule(3, 3))
    with pytest.raises(ValueError, match="alpha_update=epoch"):
        make().load_state_dict({"seed": 3, "epoch": 0, "consumed": 0})
    state = make().state_dict()
    with pytest.raises(ValueError, match="max_iters"):
        make(max_iters=13).load_state_dict(state)


def test_from_config_disabled_is_uniform() -> None:
    f = RepeatFactors(IMG, INST, np.ones(3), np.ones(3))
    off = ProgressiveDRBSampler.from_config(
        f, DRBConfig(enabled=False), batch_per_rank=1, schedule=schedule(3, 3)
    )
    assert off.image_factors.tolist() == off.instance_factors.tolist() == [1.0] * 6
