"""Discontinuity of an ordered code: is one step between consecutive values unusually large?

The paper reports that age is encoded with a jump at 17 -> 18 (methods.md 1.6). We measure it on the
class centroids c_v = mean of the rows of X with value v, for the sorted distinct values v_1 < ... < v_m.
The adjacent steps are s_j = ||c_{v_{j+1}} - c_{v_j}||_2 (Euclidean). For the step from ``at`` to the
next value present:
  discontinuity score = s_at / median(s_j, j != at): ~1 for a smooth ramp, >> 1 for a jump;
  step rank = fraction of the other steps strictly smaller than s_at: 1.0 = the largest step.
Steps are not divided by the value gap, so a missing value (e.g. no 18) makes the step span two units.
Centroids of small groups carry noise of size ~ sigma * sqrt(d / n_v), which adds to every step; the
stratified bootstrap of :func:`discontinuity_with_ci` shows how much that matters.
"""
from __future__ import annotations

import numpy as np

from medinterp.errors import MedinterpError
from medinterp.metrics._validation import check_int, check_matrix, check_vector
from medinterp.metrics.bootstrap import Estimate, _percentiles


def _check(X, values, fn: str) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Validate; return X, the sorted distinct values u (m,), each row's index into u, and counts (m,)."""
    X = check_matrix(X, fn)
    values = check_vector(values, fn, "values", n=X.shape[0])
    u, inv, counts = np.unique(values, return_inverse=True, return_counts=True)
    if len(u) < 2:
        raise MedinterpError(f"{fn} needs at least 2 distinct values in 'values'; got {len(u)}.")
    return X, u, inv, counts


STEP_CHUNK = 8  # leading slices of centroids per difference (200 bootstrap centroid sets: 80 MB at once otherwise)


def _steps(C: np.ndarray) -> np.ndarray:
    """(..., m, d) centroids -> (..., m-1) Euclidean distances between consecutive centroids.

    Taken ``STEP_CHUNK`` leading slices at a time, so the differences stay in cache instead of a temporary as
    large as ``C``; each distance is the same reduction over d as in one call (bit-identical).
    """
    if C.ndim < 3:
        return np.linalg.norm(np.diff(C, axis=-2), axis=-1)
    flat = C.reshape(-1, *C.shape[-2:])  # (k, m, d)
    out = np.empty(flat.shape[:-1], dtype=np.result_type(C.dtype, np.float32))[:, 1:]  # (k, m-1)
    for i in range(0, len(flat), STEP_CHUNK):
        out[i:i + STEP_CHUNK] = np.linalg.norm(np.diff(flat[i:i + STEP_CHUNK], axis=-2), axis=-1)
    return out.reshape(*C.shape[:-2], C.shape[-2] - 1)


def _position(u: np.ndarray, at: float, fn: str) -> int:
    """Index j of the step from ``at`` to its successor; needs ``at`` present, not last, and >= 1 other step."""
    hit = np.flatnonzero(u == at)
    span = f"values present: {len(u)} distinct in [{u[0]:g}, {u[-1]:g}]"
    if len(hit) == 0:
        raise MedinterpError(f"{fn} needs rows with value at={at:g}; {span}.")
    if hit[0] == len(u) - 1:
        raise MedinterpError(f"{fn} needs a value after at={at:g} (it is the largest); {span}.")
    if len(u) < 3:
        raise MedinterpError(f"{fn} needs at least 3 distinct values (one step besides at={at:g}); got {len(u)}.")
    return int(hit[0])


def adjacent_steps(X, values) -> tuple[np.ndarray, np.ndarray]:
    """Distances between centroids of consecutive values.

    X: (n, d); values: (n,) numbers (>= 2 distinct). Returns (u, steps): the sorted distinct values u (m,)
    and steps (m-1,) with steps[j] = ||c_{u[j+1]} - c_{u[j]}||, c_v the mean of the rows with value v.
    """
    X, u, inv, counts = _check(X, values, "adjacent_steps")
    C = np.zeros((len(u), X.shape[1]))
    np.add.at(C, inv, X)  # per-value sums, then means
    return u, _steps(C / counts[:, None])


def _score(steps: np.ndarray, j: int) -> np.ndarray:
    """s_j / median of the other steps, over the last axis (works on (m-1,) and (n_boot, m-1))."""
    others = np.delete(steps, j, axis=-1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return steps[..., j] / np.median(others, axis=-1)


def discontinuity_score(X, values, at: float = 17.0) -> float:
    """Step from ``at`` to the next value divided by the median of all other adjacent steps.

    X: (n, d); values: (n,) with >= 3 distinct values, ``at`` among them and not the largest (else
    MedinterpError). Range [0, inf): ~1 for a smooth ramp (equal steps), >> 1 for a jump at ``at``.
    """
    u, steps = adjacent_steps(X, values)
    return float(_score(steps, _position(u, at, "discontinuity_score")))


def discontinuity_with_ci(X, values, at: float = 17.0, n_boot: int = 200, seed: int = 0,
                          replicates: np.ndarray | None = None) -> Estimate:
    """:func:`discontinuity_score` with a stratified percentile-bootstrap 95% CI.

    Each replicate resamples rows with replacement within each value group (group sizes kept, so every
    value stays present) and recomputes the centroids and the score. value = the score on the full data;
    n = number of rows. Resampling is done as multinomial row counts per group, so memory is (n_boot, d).
    Caveat: a resampled centroid carries the sampling noise twice, which lengthens small steps relatively
    more than a large one, so with a strong jump the replicates sit slightly below the value (the
    percentile CI can exclude it by ~1%). Read the CI as the spread of the score, not a bias correction.
    ``replicates``: :func:`discontinuity_replicates` of the same arguments, if the caller already drew them.
    """
    fn = "discontinuity_with_ci"
    X, u, inv, _ = _check(X, values, fn)
    if replicates is None:
        replicates = discontinuity_replicates(X, values, at, n_boot, seed)
    lo, hi = _percentiles(replicates, 0.05)
    return Estimate(discontinuity_score(X, u[inv], at), lo, hi, int(X.shape[0]))


def discontinuity_replicates(X, values, at: float = 17.0, n_boot: int = 200, seed: int = 0) -> np.ndarray:
    """The (n_boot,) stratified-bootstrap replicates of :func:`discontinuity_score` (see ``discontinuity_with_ci``)."""
    fn = "discontinuity_replicates"
    X, u, inv, counts = _check(X, values, fn)
    j = _position(u, at, fn)
    n_boot = check_int(n_boot, "n_boot", fn, 1)
    rng = np.random.default_rng(seed)
    C = np.empty((n_boot, len(u), X.shape[1]))  # bootstrap centroids
    for g, n_g in enumerate(counts):
        rows = X[inv == g]  # (n_g, d)
        weights = rng.multinomial(n_g, np.full(n_g, 1.0 / n_g), size=n_boot)  # (n_boot, n_g) draw counts
        C[:, g] = weights @ rows / n_g
    return _score(_steps(C), j)


def discontinuity_diff_with_ci(X_a, values_a, X_b, values_b, at: float = 17.0, n_boot: int = 200,
                               seed: int = 0, replicates_a: np.ndarray | None = None) -> Estimate:
    """Difference of two groups' discontinuity scores (a − b; e.g. female − male) with a bootstrap 95% CI.

    The groups are independent samples, so each is resampled on its own (seeds ``seed`` and ``seed + 1``)
    and the CI is the percentile interval of the replicate differences. Null: 0. n = rows of both groups.
    ``replicates_a``: group a's replicates with ``seed``, if the caller already drew them (e.g. for
    :func:`discontinuity_with_ci` of group a, same arguments).
    """
    if replicates_a is None:
        replicates_a = discontinuity_replicates(X_a, values_a, at, n_boot, seed)
    diff = replicates_a - discontinuity_replicates(X_b, values_b, at, n_boot, seed + 1)
    lo, hi = _percentiles(diff, 0.05)
    value = discontinuity_score(X_a, values_a, at) - discontinuity_score(X_b, values_b, at)
    return Estimate(float(value), lo, hi, int(len(values_a) + len(values_b)))


def step_rank(X, values, at: float = 17.0) -> float:
    """Fraction of the other adjacent steps strictly smaller than the step from ``at``; 1.0 = the largest.

    Shapes and conditions as in :func:`discontinuity_score`. Range [0, 1]; a rank-based companion to the
    score that is insensitive to the size of the jump.
    """
    u, steps = adjacent_steps(X, values)
    j = _position(u, at, "step_rank")
    return float(np.mean(np.delete(steps, j) < steps[j]))
