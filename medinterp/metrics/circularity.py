"""Is a disease's stage path a line or a loop? Circularity of ordered stage centroids.

The paper reports that Parkinson's and COPD progressions are *circular*: late stages come back near
the healthy start. Three complementary numbers (methods.md §2, "Circularity" [ours]) on the points of
one disease, with stages c = 0..T-1:

- ``circular_corr``: circular–linear correlation (Mardia 1976) between the stage index and the angle
  of each stage centroid in the plane of the centroids' top two principal components,
  r = sqrt((r_xc² + r_xs² − 2 r_xc r_xs r_cs) / (1 − r_cs²)), with x = stage, c = cos θ, s = sin θ.
  In [0, 1]; high when the angle advances with the stage. A full, evenly walked turn peaks near 0.8
  (cos and sin cannot both be linear in the stage), and a straight path centred on its mean also scores
  high (its angle flips once, from π to 0), so read it with the two numbers below, which separate a
  line from a loop.
- ``circular_r2_gain``: the R² gained, on the points projected onto those two components, by adding
  [cos, sin](2πc/T) to a linear-in-stage regression. ≈ 0 for a straight path, > 0 for a loop.
- ``closure_ratio``: ‖c_last − c_first‖ / mean ‖c_{k+1} − c_k‖, in the full space. T − 1 for a straight
  line walked at constant speed; small (< 1) when the path returns near its start.

Nulls permute the stage labels across the disease's points; CIs resample points within each stage.
"""
from __future__ import annotations

import numpy as np

from medinterp.errors import MedinterpError
from medinterp.metrics.bootstrap import Estimate, _percentiles

CIRCULARITY_METRICS = ("circular_corr", "circular_r2_gain", "closure_ratio")


def _centroids(X: np.ndarray, stages: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    order = np.unique(stages)
    return order, np.stack([X[stages == s].mean(0) for s in order])


def _r2(Y: np.ndarray, A: np.ndarray) -> float:
    """Multivariate R² of least-squares Y ~ A (A includes the intercept column)."""
    coef, *_ = np.linalg.lstsq(A, Y, rcond=None)
    ss_res = ((Y - A @ coef) ** 2).sum()
    ss_tot = ((Y - Y.mean(0)) ** 2).sum()
    return float(1 - ss_res / ss_tot) if ss_tot > 0 else 0.0


def circularity(X, stages) -> dict[str, float]:
    """The three circularity numbers (module docstring) for points X (n, d) with stage indices (n,)."""
    X = np.asarray(X, dtype=np.float64)
    stages = np.asarray(stages, dtype=np.float64)
    order, C = _centroids(X, stages)
    T = len(order)
    if T < 3:
        raise MedinterpError(f"circularity needs at least 3 stages; got {T}")
    mu = C.mean(0)
    _, _, Vt = np.linalg.svd(C - mu, full_matrices=False)
    plane = Vt[:2].T  # (d, 2): the centroids' top-2 principal directions
    P = (C - mu) @ plane  # (T, 2)
    theta = np.arctan2(P[:, 1], P[:, 0])
    x = np.arange(T, dtype=np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        rxc, rxs, rcs = (np.corrcoef(a, b)[0, 1] for a, b in ((x, np.cos(theta)), (x, np.sin(theta)),
                                                              (np.cos(theta), np.sin(theta))))
        corr = np.sqrt(max(0.0, (rxc**2 + rxs**2 - 2 * rxc * rxs * rcs) / (1 - rcs**2)))
    rank = np.searchsorted(order, stages).astype(np.float64)  # 0..T-1 per point
    Y = (X - mu) @ plane
    linear = np.column_stack([np.ones_like(rank), rank])
    loop = np.column_stack([linear, np.cos(2 * np.pi * rank / T), np.sin(2 * np.pi * rank / T)])
    steps = np.linalg.norm(np.diff(C, axis=0), axis=1)
    return {
        "circular_corr": float(np.nan_to_num(corr, nan=0.0)),
        "circular_r2_gain": _r2(Y, loop) - _r2(Y, linear),
        "closure_ratio": float(np.linalg.norm(C[-1] - C[0]) / steps.mean()),
    }


def circularity_with_ci(X, stages, n_boot: int = 100, n_perm: int = 20, seed: int = 0) -> dict[str, tuple[Estimate, Estimate]]:
    """Each circularity number as (estimate with a stratified-bootstrap 95 % CI, stage-permutation null)."""
    X = np.asarray(X, dtype=np.float64)
    stages = np.asarray(stages, dtype=np.float64)
    rng = np.random.default_rng(seed)
    value = circularity(X, stages)
    groups = [np.flatnonzero(stages == s) for s in np.unique(stages)]
    boots = []
    for _ in range(n_boot):  # resample points within each stage (every stage stays present)
        idx = np.concatenate([rng.choice(g, size=len(g), replace=True) for g in groups])
        boots.append(circularity(X[idx], stages[idx]))
    nulls = [circularity(X, rng.permutation(stages)) for _ in range(n_perm)]
    out = {}
    for m in CIRCULARITY_METRICS:
        lo, hi = _percentiles(np.array([b[m] for b in boots]), 0.05)
        null = np.array([b[m] for b in nulls])
        nlo, nhi = _percentiles(null, 0.05)
        out[m] = (Estimate(value[m], lo, hi, len(stages)), Estimate(float(null.mean()), nlo, nhi, len(stages)))
    return out
