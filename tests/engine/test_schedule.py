"""Schedule: the run's length, the iteration of a micro-batch, progress and alpha, by hand."""

from __future__ import annotations

import math

import pytest

from drcl.config.schema import DRBConfig, TrainConfig
from drcl.engine.schedule import Schedule
from drcl.sampling.drb import alpha_curve


def test_length_comes_from_max_iters_else_epochs():
    assert Schedule.from_train(TrainConfig(epochs=3, max_iters=0), 7).max_iters == 21
    s = Schedule.from_train(TrainConfig(epochs=3, max_iters=5, accumulate=2), 7)
    assert (s.max_iters, s.iters_per_epoch, s.accumulate, s.alpha) == (5, 7, 2, None)


def test_micro_batches_map_to_iterations_and_progress():
    s = Schedule(max_iters=4, iters_per_epoch=3, accumulate=3)
    # micro-batches 0-2 are iteration 0, 3-5 iteration 1, ...
    assert [s.iteration_of(m) for m in range(8)] == [0, 0, 0, 1, 1, 1, 2, 2]
    assert [s.progress(g) for g in range(5)] == [0.0, 0.25, 0.5, 0.75, 1.0]


def test_alpha_per_iteration_reaches_its_end_at_the_last_iteration():
    linear = Schedule(5, 2, alpha=alpha_curve(DRBConfig(schedule="linear", alpha_end=0.8)))
    # alpha(g / (5 - 1)) = 0.8 * g / 4
    assert [linear.alpha_of_iteration(g) for g in range(5)] == pytest.approx(
        [0.0, 0.2, 0.4, 0.6, 0.8], abs=1e-15
    )
    cosine = Schedule(3, 2, alpha=alpha_curve(DRBConfig()))
    want = [0.5 * (1 - math.cos(math.pi * g / 2)) for g in range(3)]
    assert [cosine.alpha_of_iteration(g) for g in range(3)] == pytest.approx(want, abs=1e-15)
    assert cosine.alpha_of_iteration(2) == 1.0
    step = Schedule(11, 2, alpha=alpha_curve(DRBConfig(schedule="step", step_at=0.5)))
    assert [step.alpha_of_iteration(g) for g in (4, 5)] == [0.0, 1.0]  # 4/10 < 0.5 <= 5/10


def test_a_one_iteration_run_has_alpha_start():
    s = Schedule(1, 1, alpha=alpha_curve(DRBConfig(alpha_start=0.3)))
    assert s.alpha_of_iteration(0) == 0.3


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"max_iters": 0, "iters_per_epoch": 1}, "max_iters = 0, must be >= 1"),
        ({"max_iters": 1, "iters_per_epoch": 0}, "iters_per_epoch = 0"),
        ({"max_iters": 1, "iters_per_epoch": 1, "accumulate": 0}, "accumulate = 0"),
        ({"max_iters": 1, "iters_per_epoch": 1, "alpha_per": "step"}, "allowed: iteration, epoch"),
    ],
)
def test_bad_schedules_are_refused(kwargs, match):
    with pytest.raises(ValueError, match=match):
        Schedule(**kwargs)


def test_alpha_of_a_run_without_alpha_is_an_error():
    with pytest.raises(ValueError, match="no alpha schedule"):
        Schedule(3, 1).alpha_of_iteration(0)


def test_an_unknown_alpha_curve_is_refused_when_built():
    with pytest.raises(ValueError, match="unknown schedule 'bogus'"):
        alpha_curve(DRBConfig(schedule="bogus"))
