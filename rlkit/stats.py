"""Statistics for few-seed results: means with Student-t intervals."""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
from scipy import stats as scipy_stats


class Estimate(NamedTuple):
    mean: float
    low: float
    high: float
    n: int


def mean_interval(values, confidence: float = 0.95) -> Estimate:
    """Mean and its two-sided Student-t confidence interval (equal bounds for n == 1)."""
    x = np.asarray(values, dtype=np.float64).ravel()
    if x.size == 0:
        raise ValueError("mean_interval needs at least one value")
    mean = float(x.mean())
    if x.size < 2:
        return Estimate(mean, mean, mean, 1)
    half = float(scipy_stats.t.ppf(0.5 + confidence / 2, x.size - 1) * x.std(ddof=1) / np.sqrt(x.size))
    return Estimate(mean, mean - half, mean + half, int(x.size))
