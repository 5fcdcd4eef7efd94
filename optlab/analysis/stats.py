"""The intervals every comparison of seeds reports: a mean's and a difference of two means'
(95%, Student's and Welch's t), as the report judges a claim and the bench a pair."""

from __future__ import annotations

import math
import statistics


def interval(a: list[float], b: list[float], deterministic: bool) -> tuple[float, float, str]:
    """95% interval of mean(a) − mean(b): Welch's t over seeds; exact for deterministic runs."""
    from scipy import stats

    effect = statistics.fmean(a) - statistics.fmean(b)
    if deterministic:
        return effect, effect, "one run each; the runs are deterministic"
    if len(a) < 2 or len(b) < 2:
        return -math.inf, math.inf, f"n = {len(a)} vs {len(b)}: too few runs for an interval"
    va, vb = statistics.variance(a) / len(a), statistics.variance(b) / len(b)
    if va + vb == 0:
        return effect, effect, f"n = {len(a)} vs {len(b)}, every seed alike"
    df = (va + vb) ** 2 / (va**2 / (len(a) - 1) + vb**2 / (len(b) - 1))
    half = stats.t.ppf(0.975, df) * math.sqrt(va + vb)
    return effect - half, effect + half, f"n = {len(a)} vs {len(b)}, Welch's t, {df:.1f} df"


def mean_interval(values: list[float]) -> tuple[float, float | None]:
    """Mean and the half-width of its 95% interval (Student's t; 0 for equal values, None for one)."""
    from scipy import stats

    mean = statistics.fmean(values)
    if len(values) < 2:
        return mean, None
    if len(set(values)) == 1:
        return mean, 0.0
    return mean, stats.t.ppf(0.975, len(values) - 1) * statistics.stdev(values) / math.sqrt(len(values))
