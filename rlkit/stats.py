"""Statistics for few-seed results: Student-t means, interquartile means, percentile bootstraps.

The IQM and bootstrap tools follow rliable's recommendations for reporting RL results over few
seeds: Agarwal, Schwarzer, Castro, Courville and Bellemare (2021), "Deep Reinforcement Learning at
the Edge of the Statistical Precipice", NeurIPS (https://arxiv.org/abs/2108.13264).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import NamedTuple

import numpy as np


def _scipy_stats():
    """scipy.stats, imported when first needed (half a second of start-up that most commands skip)."""
    from scipy import stats

    return stats


class Estimate(NamedTuple):
    mean: float  # the point estimate: the mean for mean_interval, the statistic for bootstrap_interval
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
    half = float(_scipy_stats().t.ppf(0.5 + confidence / 2, x.size - 1) * x.std(ddof=1) / np.sqrt(x.size))
    return Estimate(mean, mean - half, mean + half, int(x.size))


def iqm(values, axis: int | None = None):
    """Interquartile mean: the mean of the middle 50% of ``values`` (Agarwal et al., 2021).

    Exactly ``scipy.stats.trim_mean(values, 0.25)``, which rliable uses: ``floor(n / 4)`` values
    are cut from each end and the rest averaged equally (no fractional weights at the quartiles),
    so for n < 4 nothing is cut and the IQM is the plain mean. A float over all values, or an
    array along ``axis``.
    """
    x = np.asarray(values, dtype=np.float64)
    if x.size == 0:
        raise ValueError("iqm needs at least one value")
    if axis is None:
        return float(_scipy_stats().trim_mean(x.ravel(), 0.25))
    return _scipy_stats().trim_mean(x, 0.25, axis=axis)


def _check_confidence(confidence: float, num_resamples: int) -> None:
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    if num_resamples < 1:
        raise ValueError(f"num_resamples must be >= 1, got {num_resamples}")


def bootstrap_interval(
    values,
    statistic: Callable[[np.ndarray], float] = iqm,
    confidence: float = 0.95,
    num_resamples: int = 2000,
    seed: int = 0,
) -> Estimate:
    """``statistic(values)`` and its percentile-bootstrap confidence interval over the values.

    Resamples the values (one per seed) with replacement ``num_resamples`` times from a generator
    seeded with ``seed``, so the interval is reproducible. For one task this is rliable's
    stratified bootstrap (Agarwal et al., 2021), whose strata are tasks. Returns ``Estimate(point,
    low, high, n)``, the point estimate in the ``mean`` field; for n == 1 the interval is that value.
    ``statistic(sample) -> float``; one that takes ``axis=`` (``iqm``, ``np.mean``, ``np.median``)
    gets all resamples in one call.
    """
    _check_confidence(confidence, num_resamples)
    x = np.asarray(values, dtype=np.float64).ravel()
    if x.size == 0:
        raise ValueError("bootstrap_interval needs at least one value")
    if not np.all(np.isfinite(x)):
        raise ValueError(f"bootstrap_interval needs finite values, got {x.tolist()}")
    point = float(statistic(x))
    rng = np.random.default_rng(seed)
    resamples = x[rng.integers(0, x.size, size=(num_resamples, x.size))]
    try:
        boot = np.asarray(statistic(resamples, axis=1), dtype=np.float64)
    except TypeError:
        boot = None
    if boot is None or boot.shape != (num_resamples,):
        boot = np.array([statistic(row) for row in resamples], dtype=np.float64)
    tail = 100 * (1 - confidence) / 2
    low, high = np.percentile(boot, [tail, 100 - tail])
    return Estimate(point, float(low), float(high), int(x.size))


def curve_band(
    per_seed_values,
    confidence: float = 0.95,
    num_resamples: int = 2000,
    seed: int = 0,
    max_block: int = 4_000_000,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Mean across seeds per point, with a percentile-bootstrap band resampling the seeds.

    ``per_seed_values`` is ``[seeds, points]``, e.g. a learning curve per seed. NaNs are ignored
    point by point: where k seeds have a value, the mean is theirs and each resample draws k of
    them with replacement; a point with no value gives NaN in all three arrays. Vectorized over
    points (in blocks of at most ``max_block`` resampled values); reproducible for a fixed
    ``seed``. Band as recommended by Agarwal et al. (2021) for few-seed RL curves.
    Returns ``(mean, low, high)``, each of shape ``[points]``.
    """
    _check_confidence(confidence, num_resamples)
    x = np.asarray(per_seed_values, dtype=np.float64)
    if x.ndim != 2:
        raise ValueError(f"curve_band expects [seeds, points], got shape {x.shape}")
    num_seeds, num_points = x.shape
    finite = np.isfinite(x)
    count = finite.sum(axis=0)                                     # k per point
    # Finite values first in each column, so draws in [0, k) pick only finite ones.
    order = np.argsort(~finite, axis=0, kind="stable")
    packed = np.where(np.take_along_axis(finite, order, 0), np.take_along_axis(x, order, 0), 0.0)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = packed.sum(axis=0) / count
    low = np.full(num_points, np.nan)
    high = np.full(num_points, np.nan)
    if num_seeds == 0 or num_points == 0:
        return mean, low, high
    # One set of uniforms for every point: resample r takes the same seed slots along the curve.
    uniform = np.random.default_rng(seed).random((num_resamples, num_seeds))
    used = np.arange(num_seeds)[None, :, None] < count[None, None, :]   # only the first k draws count
    tail = 100 * (1 - confidence) / 2
    block = max(1, max_block // (num_resamples * num_seeds))
    for start in range(0, num_points, block):
        cols = slice(start, start + block)
        k = count[cols]
        index = np.minimum((uniform[:, :, None] * k).astype(np.int64), np.maximum(k - 1, 0))
        draws = np.take_along_axis(packed[None, :, cols], index, axis=1)   # [resamples, seeds, block]
        with np.errstate(invalid="ignore", divide="ignore"):
            boot = np.where(used[:, :, cols], draws, 0.0).sum(axis=1) / k      # [resamples, block]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)            # all-NaN columns stay NaN
            low[cols], high[cols] = np.nanpercentile(boot, [tail, 100 - tail], axis=0)
    return mean, low, high
