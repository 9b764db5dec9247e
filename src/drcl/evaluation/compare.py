"""Statistics for comparing runs over seeds: mean, standard deviation, paired t-intervals.

The ablation runs every row with the same K seeds; seed ``s`` of every row uses the same
fine-tuning seed (and pre-training seed), so the rows are *paired* by seed. The difference of a
row to the baseline is then estimated per seed, ``d_s = x_s - b_s``, and its 95% confidence
interval is Student's t-interval over those K differences::

    mean(d) ± t_{0.975, K-1} · sd(d) / sqrt(K)        (sd with ddof = 1)

With K = 1 there is no spread to estimate and the interval is ``None``. scipy is not a
dependency, so the t quantile is computed here from the regularised incomplete beta function
(Numerical Recipes' continued fraction) and bisection; a test checks it against printed tables.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

__all__ = [
    "mean_std",
    "paired_difference",
    "student_t_cdf",
    "student_t_quantile",
]


def _betacf(a: float, b: float, x: float) -> float:
    """Continued fraction of the incomplete beta function (modified Lentz's method)."""
    tiny, eps = 1e-300, 1e-15
    qab, qap, qam = a + b, a + 1.0, a - 1.0
    c, d = 1.0, 1.0 - qab * x / qap
    d = 1.0 / (d if abs(d) > tiny else tiny)
    h = d
    for m in range(1, 300):
        m2 = 2 * m
        for aa in (
            m * (b - m) * x / ((qam + m2) * (a + m2)),
            -(a + m) * (qab + m) * x / ((a + m2) * (qap + m2)),
        ):
            d = 1.0 + aa * d
            d = 1.0 / (d if abs(d) > tiny else tiny)
            c = 1.0 + aa / c
            c = c if abs(c) > tiny else tiny
            h *= d * c
        if abs(d * c - 1.0) < eps:
            break
    return h


def _betainc(a: float, b: float, x: float) -> float:
    """Regularised incomplete beta ``I_x(a, b)`` for ``0 <= x <= 1``."""
    if x <= 0.0:
        return 0.0
    if x >= 1.0:
        return 1.0
    log_front = math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b)
    front = math.exp(log_front + a * math.log(x) + b * math.log1p(-x))
    if x < (a + 1.0) / (a + b + 2.0):
        return front * _betacf(a, b, x) / a
    return 1.0 - front * _betacf(b, a, 1.0 - x) / b


def student_t_cdf(t: float, df: float) -> float:
    """``P(T <= t)`` for Student's t with ``df`` degrees of freedom.

    Uses ``P(|T| > |t|) = I_{df / (df + t²)}(df / 2, 1 / 2)``.
    """
    if df <= 0:
        raise ValueError(f"degrees of freedom must be > 0, got {df}")
    tail = 0.5 * _betainc(df / 2.0, 0.5, df / (df + t * t))
    return 1.0 - tail if t >= 0 else tail


def student_t_quantile(p: float, df: float) -> float:
    """The ``p`` quantile of Student's t with ``df`` degrees of freedom (bisection on the cdf).

    Example: ``student_t_quantile(0.975, 2) == 4.3027`` (to 4 decimals), the 95% two-sided value.
    """
    if not 0.0 < p < 1.0:
        raise ValueError(f"quantile level must be in (0, 1), got {p}")
    if p < 0.5:
        return -student_t_quantile(1.0 - p, df)
    lo, hi = 0.0, 1.0
    while student_t_cdf(hi, df) < p:  # bracket: the cdf is increasing
        hi *= 2.0
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        if student_t_cdf(mid, df) < p:
            lo = mid
        else:
            hi = mid
        if hi - lo < 1e-12 * max(1.0, hi):
            break
    return 0.5 * (lo + hi)


def _finite(values: Sequence[float | None]) -> list[float]:
    return [float(v) for v in values if v is not None and math.isfinite(float(v))]


def mean_std(values: Sequence[float | None]) -> tuple[float | None, float | None]:
    """Mean and sample standard deviation (ddof = 1) of the finite values.

    Returns ``(None, None)`` without any finite value and ``(mean, None)`` with one.
    """
    xs = _finite(values)
    if not xs:
        return None, None
    mean = sum(xs) / len(xs)
    if len(xs) < 2:
        return mean, None
    return mean, math.sqrt(sum((x - mean) ** 2 for x in xs) / (len(xs) - 1))


def paired_difference(
    values: Sequence[float | None], baseline: Sequence[float | None], level: float = 0.95
) -> dict[str, float | list[float] | int | None]:
    """Mean paired difference ``values - baseline`` over seeds, with a Student-t interval.

    Args:
        values: per-seed metric of a row, in seed order.
        baseline: per-seed metric of the baseline row, same seeds, same order.
        level: two-sided confidence level.

    Returns:
        ``{"mean", "ci95": [lo, hi] or None, "n"}``; seeds where either value is missing
        (None / NaN) are left out; the interval is None with fewer than 2 pairs.
    """
    if len(values) != len(baseline):
        raise ValueError(f"paired difference: {len(values)} values but {len(baseline)} baseline")
    diffs = [
        float(v) - float(b)
        for v, b in zip(values, baseline, strict=True)
        if _finite([v]) and _finite([b])
    ]
    mean, sd = mean_std(diffs)
    ci = None
    if mean is not None and sd is not None:
        half = student_t_quantile(0.5 + level / 2.0, len(diffs) - 1) * sd / math.sqrt(len(diffs))
        ci = [mean - half, mean + half]
    return {"mean": mean, "ci95": ci, "n": len(diffs)}


def excludes_zero(ci: Sequence[float] | None) -> bool:
    """True when an interval lies entirely above or below 0 (None: no interval, False)."""
    return ci is not None and (ci[0] > 0 or ci[1] < 0)
