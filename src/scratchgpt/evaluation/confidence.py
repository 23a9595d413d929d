"""How sure a mean is: Student's t confidence interval, computed from scratch.

A mean of ``n`` scores is itself a random quantity: another sample of ``n`` entries of the same
kind would give another mean. With ``s`` the sample standard deviation, the 95% interval

    mean ± t(0.975, n-1) · s / √n

holds the true mean in 95% of samples (scores roughly normal, or ``n`` large). ``t(p, df)`` is
the quantile of Student's t distribution, wider than the normal's 1.96 for small ``n``: its
CDF is the regularized incomplete beta function, evaluated here by its continued fraction
(:func:`_betainc`), and the quantile found by bisection. The values equal scipy's
``stats.t.ppf`` (``tests/test_judge.py``); scipy is not needed to run.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence


def _betainc(a: float, b: float, x: float) -> float:
    """The regularized incomplete beta function I_x(a, b), by its continued fraction
    (Lentz's method), for the t distribution's CDF."""
    if x <= 0.0:
        return 0.0
    if x >= 1.0:
        return 1.0
    if x > (a + 1.0) / (a + b + 2.0):  # the fraction converges fast on this side only
        return 1.0 - _betainc(b, a, 1.0 - x)
    front = math.exp(math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b)
                     + a * math.log(x) + b * math.log1p(-x)) / a
    tiny = 1e-300
    c, d = 1.0, 1.0 - (a + b) * x / (a + 1.0)
    d = 1.0 / (d if abs(d) > tiny else tiny)
    f = d
    for m in range(1, 500):
        for numerator in (m * (b - m) * x / ((a + 2 * m - 1) * (a + 2 * m)),
                          -(a + m) * (a + b + m) * x / ((a + 2 * m) * (a + 2 * m + 1))):
            d = 1.0 + numerator * d
            d = 1.0 / (d if abs(d) > tiny else tiny)
            c = 1.0 + numerator / c
            c = c if abs(c) > tiny else tiny
            f *= c * d
        if abs(c * d - 1.0) < 1e-15:
            break
    return front * f


def t_cdf(t: float, df: float) -> float:
    """P(T <= t) for Student's t with ``df`` degrees of freedom."""
    tail = 0.5 * _betainc(df / 2.0, 0.5, df / (df + t * t))
    return 1.0 - tail if t >= 0 else tail


def t_quantile(p: float, df: float) -> float:
    """The ``p`` quantile of Student's t (``t_quantile(0.975, 9)`` is 2.262...), by bisection
    on :func:`t_cdf` to about 1e-12."""
    if not 0.0 < p < 1.0 or df <= 0:
        raise ValueError(f"t_quantile needs 0 < p < 1 and df > 0, got p={p}, df={df}")
    if p < 0.5:
        return -t_quantile(1.0 - p, df)
    low, high = 0.0, 1.0
    while t_cdf(high, df) < p:
        high *= 2.0
    for _ in range(200):
        middle = (low + high) / 2.0
        if t_cdf(middle, df) < p:
            low = middle
        else:
            high = middle
        if high - low < 1e-12 * max(1.0, high):
            break
    return (low + high) / 2.0


def mean_ci95(scores: Sequence[float]) -> tuple[float, float] | None:
    """Student's t 95% confidence interval for the mean of ``scores``; None below two."""
    n = len(scores)
    if n < 2:
        return None
    mean = statistics.fmean(scores)
    half = t_quantile(0.975, n - 1) * statistics.stdev(scores) / math.sqrt(n)
    return mean - half, mean + half
