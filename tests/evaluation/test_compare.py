import math

import pytest

from drcl.evaluation.compare import (
    excludes_zero,
    mean_std,
    paired_difference,
    student_t_cdf,
    student_t_quantile,
)

# Two-sided 95% values t(0.975, df) from printed Student-t tables; 0.95 one-sided for df=5.
TABLE = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 9: 2.262, 10: 2.228, 30: 2.042}


@pytest.mark.parametrize("df,expected", sorted(TABLE.items()))
def test_t_quantile_matches_printed_table(df, expected):
    assert student_t_quantile(0.975, df) == pytest.approx(expected, abs=5e-4)


def test_t_quantile_other_levels_and_symmetry():
    assert student_t_quantile(0.95, 5) == pytest.approx(2.015, abs=5e-4)
    assert student_t_quantile(0.025, 4) == pytest.approx(-2.776, abs=5e-4)
    assert student_t_quantile(0.5, 7) == pytest.approx(0.0, abs=1e-9)
    # large df approaches the normal quantile 1.95996
    assert student_t_quantile(0.975, 10_000) == pytest.approx(1.95996, abs=5e-4)


def test_t_cdf_closed_forms():
    # df = 1 is Cauchy: F(t) = 1/2 + atan(t)/pi; df = 2: F(t) = 1/2 + t / (2 sqrt(2 + t^2))
    for t in (-3.0, -0.5, 0.0, 0.7, 4.0):
        assert student_t_cdf(t, 1) == pytest.approx(0.5 + math.atan(t) / math.pi, abs=1e-10)
        assert student_t_cdf(t, 2) == pytest.approx(0.5 + t / (2 * math.sqrt(2 + t * t)), abs=1e-10)


def test_bad_quantile_level_and_df():
    with pytest.raises(ValueError, match="quantile level"):
        student_t_quantile(1.0, 3)
    with pytest.raises(ValueError, match="degrees of freedom"):
        student_t_cdf(1.0, 0)


def test_paired_difference_hand_computed():
    # d = (2, 3, 2): mean 7/3, sd sqrt(1/3), se = sd / sqrt(3) = 1/3, half = 4.3027 / 3
    out = paired_difference([3.0, 5.0, 4.0], [1.0, 2.0, 2.0])
    assert out["mean"] == pytest.approx(7 / 3)
    assert out["ci95"] == pytest.approx([7 / 3 - 4.302653 / 3, 7 / 3 + 4.302653 / 3], abs=1e-5)
    assert out["n"] == 3
    assert excludes_zero(out["ci95"])


def test_paired_difference_skips_missing_pairs_and_needs_two():
    out = paired_difference([1.0, None, float("nan"), 2.0], [0.0, 1.0, 1.0, 0.5])
    assert out["n"] == 2 and out["mean"] == pytest.approx(1.25)
    one = paired_difference([1.0], [0.5])
    assert one == {"mean": 0.5, "ci95": None, "n": 1}
    assert not excludes_zero(None)
    empty = paired_difference([], [])
    assert empty == {"mean": None, "ci95": None, "n": 0}
    with pytest.raises(ValueError, match="2 values but 1 baseline"):
        paired_difference([1.0, 2.0], [1.0])


def test_mean_std_sample_deviation():
    assert mean_std([1.0, 2.0, 3.0, 4.0]) == pytest.approx((2.5, math.sqrt(5 / 3)))
    assert mean_std([7.0, None]) == (7.0, None)
    assert mean_std([]) == (None, None)
