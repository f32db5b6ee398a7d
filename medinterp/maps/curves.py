"""Per-layer curves → selected layer intervals: the knowledge-map rules of methods.md §1.5.

Pure functions on 1-D arrays (one value per consecutive layer); positions are array indices, and the
caller adds the curve's first layer. Intervals are inclusive ``(a, b)`` index pairs.

smooth            Gaussian smoothing, σ = 1.0, ``mode="nearest"`` (edges repeat the end values)
steepest_window   UMAP channel: the window l..l+w-1 with the largest rise s(l+w-1) − s(l)
top_segments      saliency / ablation / patching: runs above the 75th percentile, ≥ 2 long, ≤ 3 kept
age_layers        age channel: smoothed R² within a tolerance of its maximum ∪ top-quartile anisotropy runs
runs, consensus   runs of True in a mask; layers selected by at least ``min_methods`` methods

Ties. Smoothing a symmetric curve gives values that are equal in exact arithmetic but may differ in the
last bit, so comparisons against a threshold or a maximum use a tolerance of ``rtol`` (1e-9) times the
curve's range: a value that close to the 75th percentile is *not* above it, and the earliest of several
near-equal best windows wins. Without it, the selected layers would depend on rounding.
"""
from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np
from scipy.ndimage import gaussian_filter1d

from medinterp.errors import MedinterpError

Interval = tuple[int, int]
RTOL = 1e-9  # ties: values within RTOL·(max − min) of a threshold count as equal to it


def _curve(values, fn: str) -> np.ndarray:
    """A finite 1-D float array, or a one-line error naming ``fn``."""
    arr = np.asarray(values, dtype=float)
    if arr.ndim != 1 or arr.size == 0:
        raise MedinterpError(f"{fn} needs a non-empty 1-D curve; got shape {arr.shape}.")
    if not np.all(np.isfinite(arr)):
        raise MedinterpError(f"{fn} needs finite values; got {int((~np.isfinite(arr)).sum())} NaN/inf.")
    return arr


def _tolerance(values: np.ndarray) -> float:
    return RTOL * float(values.max() - values.min())


def smooth(values, sigma: float = 1.0) -> np.ndarray:
    """Gaussian-smoothed copy of a per-layer curve (σ in layers; σ = 0 returns the values unchanged).

    ``scipy.ndimage.gaussian_filter1d(values, sigma, mode="nearest")``: kernel weights ∝ exp(−k²/2σ²)
    for |k| ≤ round(4σ), normalised to sum 1, and the curve extended past its ends with its end values,
    so a flat edge stays flat and nothing leaks in from a zero padding.
    """
    arr = _curve(values, "smooth")
    if sigma < 0:
        raise MedinterpError(f"The 'sigma' parameter of smooth must be >= 0. Got {sigma} instead.")
    if sigma == 0:
        return arr.copy()
    return gaussian_filter1d(arr, float(sigma), mode="nearest")


def runs(mask: Sequence[bool]) -> list[Interval]:
    """Maximal runs of consecutive True entries, as inclusive (start, end) index pairs, left to right."""
    m = np.asarray(mask, dtype=bool)
    edges = np.diff(np.concatenate([[0], m.astype(np.int8), [0]]))
    starts, ends = np.flatnonzero(edges == 1), np.flatnonzero(edges == -1) - 1
    return [(int(a), int(b)) for a, b in zip(starts, ends)]


def steepest_window(values, window: int = 3) -> Interval | None:
    """The window [l, l + window − 1] whose rise s(l + window − 1) − s(l) is largest.

    ``values`` are the smoothed curve. Near-ties (within the tolerance above) go to the earliest window.
    Returns None when the curve is shorter than ``window`` or never rises (largest rise ≤ tolerance):
    a falling or flat curve has no "increase" to localise.
    """
    arr = _curve(values, "steepest_window")
    if window < 2:
        raise MedinterpError(f"The 'window' parameter of steepest_window must be >= 2. Got {window} instead.")
    if arr.size < window:
        return None
    rise = arr[window - 1:] - arr[: arr.size - window + 1]  # rise[l] = s(l + w − 1) − s(l)
    tol = _tolerance(arr)
    best = float(rise.max())
    if best <= tol:
        return None
    start = int(np.flatnonzero(rise >= best - tol)[0])
    return start, start + window - 1


def top_segments(values, percentile: float = 75.0, min_segment: int = 2, max_segments: int = 3) -> list[Interval]:
    """Runs of values above the ``percentile``-th percentile of the curve, at least ``min_segment`` long.

    The threshold is ``np.percentile(values, percentile)`` (linear interpolation) of this curve's own
    (smoothed) values; "above" is strict, with the tie tolerance above. When more than ``max_segments``
    runs qualify, the ones with the largest area above the threshold, Σ (v − threshold), are kept (the
    earlier run wins an exact tie). Returned left to right.
    """
    arr = _curve(values, "top_segments")
    if not 0.0 <= percentile <= 100.0:
        raise MedinterpError(f"The 'percentile' parameter of top_segments must be in [0, 100]. Got {percentile} instead.")
    if min_segment < 1 or max_segments < 1:
        raise MedinterpError("The 'min_segment' and 'max_segments' parameters of top_segments must be >= 1. "
                             f"Got {min_segment} and {max_segments} instead.")
    threshold = float(np.percentile(arr, percentile))
    above = arr > threshold + _tolerance(arr)
    segments = [(a, b) for a, b in runs(above) if b - a + 1 >= min_segment]
    area = {seg: float((arr[seg[0]: seg[1] + 1] - threshold).sum()) for seg in segments}
    kept = sorted(segments, key=lambda seg: (-area[seg], seg[0]))[:max_segments]
    return sorted(kept)


def near_max(values, tolerance: float) -> list[Interval]:
    """Runs of values within ``tolerance`` of the curve's maximum (v ≥ max − tolerance)."""
    arr = _curve(values, "near_max")
    if tolerance < 0:
        raise MedinterpError(f"The 'tolerance' parameter of near_max must be >= 0. Got {tolerance} instead.")
    return runs(arr >= arr.max() - tolerance - _tolerance(arr))


def age_layers(r2, anisotropy, tolerance: float = 0.02, percentile: float = 75.0, min_segment: int = 2,
               max_segments: int = 3) -> tuple[list[Interval], list[Interval]]:
    """The age rule (ours; the paper says only "the layers of top R² / anisotropy").

    ``r2`` and ``anisotropy`` are smoothed curves over the same layers (either may be None). Returns
    (R² runs, anisotropy runs): the layers whose smoothed R² is within ``tolerance`` of its maximum, and
    the anisotropy curve's :func:`top_segments`. The age interval set is their union (see :func:`union`).
    """
    r2_runs = near_max(r2, tolerance) if r2 is not None else []
    aniso_runs = top_segments(anisotropy, percentile, min_segment, max_segments) if anisotropy is not None else []
    return r2_runs, aniso_runs


def layers_of(intervals: Iterable[Interval]) -> set[int]:
    """Every position covered by inclusive ``intervals``."""
    return {i for a, b in intervals for i in range(a, b + 1)}


def union(*interval_lists: Iterable[Interval]) -> list[Interval]:
    """Inclusive intervals covering the union of the given ones (adjacent layers merge into one run)."""
    covered = set().union(*(layers_of(ivs) for ivs in interval_lists))
    if not covered:
        return []
    lo = min(covered)
    return [(a + lo, b + lo) for a, b in runs([i in covered for i in range(lo, max(covered) + 1)])]


def consensus(selections: Iterable[Iterable[Interval]], min_methods: int = 2) -> tuple[list[Interval], dict[int, int]]:
    """Layers selected by at least ``min_methods`` of the methods' interval lists.

    Each method votes once per layer it covers (overlapping intervals of one method count once).
    Returns (runs of agreeing layers, {layer: votes}).
    """
    if min_methods < 1:
        raise MedinterpError(f"The 'min_methods' parameter of consensus must be >= 1. Got {min_methods} instead.")
    votes: dict[int, int] = {}
    for intervals in selections:
        for layer in layers_of(intervals):
            votes[layer] = votes.get(layer, 0) + 1
    agreed = [(layer, layer) for layer, v in votes.items() if v >= min_methods]
    return union(agreed), dict(sorted(votes.items()))
