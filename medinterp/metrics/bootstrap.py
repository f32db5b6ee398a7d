"""Percentile-bootstrap confidence intervals and the :class:`Estimate` row format.

Every medinterp metric is reported as a value with a 95% CI (the paper bootstraps every metric;
B = 200 resamples is our default, methods.md 1.1). The percentile bootstrap (Efron & Tibshirani 1993,
"An Introduction to the Bootstrap", ch. 13) resamples rows with replacement, recomputes the statistic,
and takes the alpha/2 and 1 - alpha/2 quantiles of the B replicates.

All resampling draws one (n_boot, n) index matrix from ``np.random.default_rng(seed)`` (see
:func:`_boot_indices`), so the same seed gives the same resamples in every function here.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from medinterp.errors import MedinterpError
from medinterp.metrics._validation import check_alpha, check_int, check_vector


@dataclass(frozen=True)
class Estimate:
    """One metric value with its confidence interval: the (value, ci_low, ci_high, n) of a results row.

    ``n`` is the number of samples (prompts, points, pairs) the value was computed from.
    """

    value: float
    ci_low: float
    ci_high: float
    n: int


@dataclass(frozen=True)
class Scored:
    """An :class:`Estimate` and its ``note``: empty, or one line saying why the value is NaN or must be read
    with care (e.g. "n_rows <= d: in-sample fit is trivially 1"); the note goes to the results' note column."""

    estimate: Estimate
    note: str = ""


def nan_scored(n: int, note: str) -> Scored:
    """A NaN value and interval from ``n`` samples, with the reason."""
    return Scored(Estimate(np.nan, np.nan, np.nan, int(n)), note)


def scored_from_replicates(value: float, replicates: torch.Tensor, n: int, note: str = "",
                           alpha: float = 0.05, recentre: bool = False) -> Scored:
    """``value`` with the percentile (1 - alpha) interval of bootstrap ``replicates`` (any shape, torch).

    ``recentre=True`` moves the interval by the replicates' median bias, [v - (med - q_lo), v + (q_hi - med)],
    for statistics whose bootstrap distribution is shifted away from the estimate (an extreme eigenvalue:
    duplicated rows inflate it), where the plain percentile interval can exclude the estimate itself.
    Like :func:`bootstrap_ci`, a NaN replicate makes the interval NaN (no silent dropping)."""
    reps = replicates.detach().to("cpu", torch.float64).numpy().ravel()
    if not np.isfinite(reps).all():
        return Scored(Estimate(float(value), np.nan, np.nan, int(n)), note)
    lo, hi = _percentiles(reps, alpha)
    if recentre:
        shift = float(value) - float(np.median(reps))
        lo, hi = lo + shift, hi + shift
    return Scored(Estimate(float(value), lo, hi, int(n)), note)


def boot_index_tensor(n: int, n_boot: int, seed: int, device: torch.device | str = "cpu") -> torch.Tensor:
    """:func:`_boot_indices` as an int64 tensor on ``device``: the same resamples as the numpy helpers."""
    return torch.from_numpy(_boot_indices(n, n_boot, seed)).to(device)


def _boot_indices(n: int, n_boot: int, seed: int) -> np.ndarray:
    """(n_boot, n) row indices drawn uniformly with replacement; the single source of bootstrap randomness."""
    return np.random.default_rng(seed).integers(0, n, size=(n_boot, n))


def _percentiles(replicates: np.ndarray, alpha: float) -> tuple[float, float]:
    """The alpha/2 and 1 - alpha/2 quantiles (linear interpolation) of the replicates."""
    lo, hi = np.percentile(replicates, [100 * alpha / 2, 100 * (1 - alpha / 2)])
    return float(lo), float(hi)


def bootstrap_ci(samples: np.ndarray, statistic: Callable[[np.ndarray], float] = np.mean, n_boot: int = 200,
                 alpha: float = 0.05, seed: int = 0) -> tuple[float, float]:
    """Percentile-bootstrap (1 - alpha) CI of ``statistic`` over the first axis of ``samples``.

    Rows of ``samples`` (shape (n, ...), n >= 2) are resampled with replacement ``n_boot`` times;
    ``statistic`` receives each resampled array (same shape as ``samples``) and returns a float.
    Returns (q_{alpha/2}, q_{1-alpha/2}) of the replicates. A NaN replicate makes the CI NaN (no silent
    dropping). Deterministic for a given ``seed``.
    """
    fn = "bootstrap_ci"
    samples = np.asarray(samples)
    if samples.ndim == 0 or samples.shape[0] < 2:
        raise MedinterpError(f"The 'samples' parameter of {fn} must have at least 2 rows. "
                             f"Got shape {samples.shape} instead.")
    n_boot = check_int(n_boot, "n_boot", fn, 1)
    alpha = check_alpha(alpha, fn)
    idx = _boot_indices(samples.shape[0], n_boot, seed)
    replicates = np.array([statistic(samples[i]) for i in idx], dtype=np.float64)
    return _percentiles(replicates, alpha)


def mean_with_ci(samples, n_boot: int = 200, alpha: float = 0.05, seed: int = 0) -> Estimate:
    """Mean of a 1-D sample with a percentile-bootstrap (1 - alpha) CI.

    value = (1/n) sum_i x_i; the CI is that of :func:`bootstrap_ci` with ``np.mean`` (same seed, same
    resamples), computed vectorized from one (n_boot, n) index matrix. For large n it approaches
    mean +- z_{1-alpha/2} * sigma / sqrt(n). Needs n >= 2 finite values.
    """
    fn = "mean_with_ci"
    x = check_vector(samples, fn, "samples")
    if x.shape[0] < 2:
        raise MedinterpError(f"The 'samples' parameter of {fn} must have at least 2 values. Got {x.shape[0]} instead.")
    n_boot = check_int(n_boot, "n_boot", fn, 1)
    alpha = check_alpha(alpha, fn)
    replicates = x[_boot_indices(x.shape[0], n_boot, seed)].mean(axis=1)  # (n_boot,)
    lo, hi = _percentiles(replicates, alpha)
    return Estimate(float(x.mean()), lo, hi, int(x.shape[0]))


def finite_mean_with_ci(samples, *, n_boot: int = 200, alpha: float = 0.05, seed: int = 0) -> Estimate:
    """:func:`mean_with_ci` over the finite values of ``samples``, for per-layer rows of any size.

    With fewer than 2 finite values there is no interval: one value gives (value, NaN, NaN, 1), none
    gives (NaN, NaN, NaN, 0). ``n`` counts the finite values (e.g. the prompts a judge scored).
    """
    x = np.asarray(samples, dtype=np.float64).ravel()
    x = x[np.isfinite(x)]
    if len(x) >= 2:
        return mean_with_ci(x, n_boot=n_boot, alpha=alpha, seed=seed)
    return Estimate(float(x[0]) if len(x) else np.nan, np.nan, np.nan, len(x))
