"""Relative depth: models with different layer counts on one axis, and how much two models agree on it.

A model with ``n`` blocks has read-outs ``l = 0..n`` (0 = embeddings, ``l`` = raw output of block ``l − 1``;
medinterp/methods/base.py). Its **relative depth** is ``δ(l) = l / n`` ∈ [0, 1], so the embeddings sit at 0
and the last block's output at 1 in every model (Gemma-3-270M, 18 blocks: L9 → 0.5; SmolLM2-135M, 30 blocks:
L15 → 0.5).

- :func:`resample`: a per-layer curve ``v[0..n]`` read at depths of a common grid by linear interpolation
  between neighbouring read-outs (``np.interp`` on the points (l / n, v[l])); a read-out without a finite
  value is left out of the interpolation, and grid depths outside the finite read-outs' range are NaN.
- :func:`layer_cells` / :func:`depth_intervals`: a selected layer interval [a, b] (closed, read-out indices)
  as the depth interval [(a − ½) / n, (b + ½) / n] ∩ [0, 1]: each read-out owns the half-layer on either side
  of its depth, so a one-layer interval has width 1 / n (½ n at the ends) and never zero length.
- :func:`interval_jaccard`: |A ∩ B| / |A ∪ B| of two sets of depth intervals (Lebesgue measure, exact):
  1 = the same depths, 0 = disjoint; NaN when neither model selected any layer (undefined, not 0).
- :func:`rank_correlation`: Spearman's ρ of two curves resampled to the same grid, on the grid points where
  both are finite (``scipy.stats.spearmanr``), with a bootstrap 95 % CI over grid points.

Pure functions (numpy in, numbers out); the callers (medinterp/atlas/agreement.py) say which curves and
intervals they pass.
"""
from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np

from medinterp.errors import MedinterpError
from medinterp.metrics import Estimate

Interval = tuple[float, float]
GRID_POINTS = 21  # the common grid: depths 0, 0.05, ..., 1


def _n_layers(n_layers: int) -> int:
    if int(n_layers) != n_layers or n_layers < 1:
        raise MedinterpError(f"n_layers must be an integer >= 1; got {n_layers!r}")
    return int(n_layers)


def relative_depth(layer: int, n_layers: int) -> float:
    """``layer / n_layers``: 0 = embeddings, 1 = the last block's output."""
    return layer / _n_layers(n_layers)


def grid(points: int = GRID_POINTS) -> np.ndarray:
    """``points`` evenly spaced depths from 0 to 1 inclusive."""
    if int(points) != points or points < 2:
        raise MedinterpError(f"the depth grid needs at least 2 points; got {points!r}")
    return np.linspace(0.0, 1.0, int(points))


def resample(values: Sequence[float | None], n_layers: int, depths: np.ndarray) -> np.ndarray:
    """``values[l]`` (read-outs 0..n_layers; None/NaN = no value) linearly interpolated at ``depths``.

    Returns an array like ``depths``: NaN outside [first, last] finite read-out depth (never extrapolated).
    """
    n = _n_layers(n_layers)
    v = np.array([np.nan if x is None else float(x) for x in values], dtype=float)
    if v.size != n + 1:
        raise MedinterpError(f"resample: a curve over read-outs 0..{n} has {n + 1} values; got {v.size}")
    ok = np.isfinite(v)
    out = np.full(np.shape(depths), np.nan)
    if not ok.any():
        return out
    x = np.arange(n + 1)[ok] / n
    inside = (depths >= x[0] - 1e-12) & (depths <= x[-1] + 1e-12)
    out[inside] = np.interp(np.asarray(depths)[inside], x, v[ok])
    return out


def depth_intervals(intervals: Iterable[Sequence[int]], n_layers: int) -> list[Interval]:
    """Closed read-out intervals [a, b] as depth intervals [(a − ½)/n, (b + ½)/n] clipped to [0, 1]."""
    n = _n_layers(n_layers)
    out = []
    for a, b in intervals:
        if b < a:
            raise MedinterpError(f"interval [{a}, {b}] ends before it starts")
        out.append((max(0.0, (a - 0.5) / n), min(1.0, (b + 0.5) / n)))
    return out


def _merge(intervals: Iterable[Interval]) -> list[Interval]:
    """Disjoint sorted intervals covering the union of ``intervals``."""
    merged: list[list[float]] = []
    for a, b in sorted(intervals):
        if merged and a <= merged[-1][1]:
            merged[-1][1] = max(merged[-1][1], b)
        else:
            merged.append([a, b])
    return [(a, b) for a, b in merged]


def measure(intervals: Iterable[Interval]) -> float:
    """Total length of the union of ``intervals``."""
    return float(sum(b - a for a, b in _merge(intervals)))


def intersection(a: Iterable[Interval], b: Iterable[Interval]) -> list[Interval]:
    """The intersection of two unions of intervals, as disjoint intervals."""
    ma, mb = _merge(a), _merge(b)
    out, i, j = [], 0, 0
    while i < len(ma) and j < len(mb):
        lo, hi = max(ma[i][0], mb[j][0]), min(ma[i][1], mb[j][1])
        if hi > lo:
            out.append((lo, hi))
        if ma[i][1] < mb[j][1]:
            i += 1
        else:
            j += 1
    return out


def interval_jaccard(a: Iterable[Interval], b: Iterable[Interval]) -> float:
    """|A ∩ B| / |A ∪ B| of two sets of depth intervals; NaN when both are empty."""
    a, b = list(a), list(b)
    union = measure(a + b)
    if union == 0.0:
        return float("nan")
    return measure(intersection(a, b)) / union


def _spearman(xy: np.ndarray) -> float:
    """Spearman's ρ of the two columns of ``xy`` (n, 2): Pearson's r of their ranks (ties: average ranks)."""
    from scipy.stats import rankdata

    rx, ry = rankdata(xy[:, 0]), rankdata(xy[:, 1])
    if np.ptp(rx) == 0 or np.ptp(ry) == 0:
        return float("nan")
    return float(np.corrcoef(rx, ry)[0, 1])


def rank_correlation(x: np.ndarray, y: np.ndarray, n_boot: int = 200, seed: int = 0) -> Estimate:
    """Spearman's ρ of two resampled curves over the grid points where both are finite (``n`` of them).

    ρ = Pearson's r of the ranks (= ``scipy.stats.spearmanr``), in [−1, 1]. The CI is the percentile
    bootstrap over those grid points (:func:`medinterp.metrics.bootstrap_ci`; NaN if a resample has a
    constant side). NaN throughout with fewer than 3 points or a constant curve.
    """
    from medinterp.metrics import bootstrap_ci

    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    ok = np.isfinite(x) & np.isfinite(y)
    xy = np.stack([x[ok], y[ok]], axis=1)  # (n, 2)
    n = int(ok.sum())
    rho = _spearman(xy) if n >= 3 else float("nan")
    if not np.isfinite(rho):
        return Estimate(float("nan"), float("nan"), float("nan"), n)
    lo, hi = bootstrap_ci(xy, _spearman, n_boot=n_boot, seed=seed)
    return Estimate(rho, lo, hi, n)
