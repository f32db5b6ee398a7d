"""Effective rank of a point cloud (Roy & Vetterli 2007): how many directions the activations use.

erank(X) = exp(H(p)), p_i = σ_i / Σ_j σ_j, with σ the singular values of the centred X and H the Shannon
entropy. In [1, min(n, d)]; 1 for points on a line, min(n, d) for an isotropic cloud with n ≫ d. A
layer where the effective rank (or the between-class structure) collapses and later recovers is the
"activation collapse" the paper reports for Gemma mid-network.
"""
from __future__ import annotations

import numpy as np

from medinterp.metrics.bootstrap import Estimate, _percentiles


def effective_rank(X, weights=None) -> float:
    """exp(entropy of the normalised singular values) of the column-centred X (n, d).

    ``weights`` (n,), non-negative: each row counts with that weight (mean and covariance are weighted);
    used by the Bayesian bootstrap below.
    """
    X = np.asarray(X, dtype=np.float64)
    w = np.ones(len(X)) if weights is None else np.asarray(weights, dtype=np.float64)
    w = w / w.sum()
    Xc = (X - w @ X) * np.sqrt(w)[:, None]
    # The Gram matrix of the smaller side has the same non-zero singular values (squared).
    G = Xc @ Xc.T if Xc.shape[0] <= Xc.shape[1] else Xc.T @ Xc
    lam = np.linalg.eigvalsh(G)
    # Round-off leaves eigenvalues of order eps · λ_max where the true ones are 0; their square roots
    # (~1e-8 σ_max each) would add ~1e-6 to the rank of a line. Below size · eps · λ_max is zero.
    lam[lam <= max(lam.max(), 0.0) * len(G) * np.finfo(np.float64).eps] = 0.0
    sigma = np.sqrt(lam)
    if sigma.sum() == 0:
        return 1.0
    p = sigma / sigma.sum()
    p = p[p > 0]
    return float(np.exp(-(p * np.log(p)).sum()))


def effective_rank_with_ci(X, n_boot: int = 30, seed: int = 0) -> Estimate:
    """:func:`effective_rank` with a Bayesian-bootstrap 95 % CI (Rubin 1981).

    An ordinary bootstrap duplicates rows, and duplicates remove directions, which biases every
    replicate's rank downwards (the CI would sit below the value). The Bayesian bootstrap keeps every
    row and reweights it with Dirichlet(1, ..., 1) weights instead. Even so, an entropy of a spectrum is
    biased low under any resampling (fewer effective samples flatten less), by a few percent at n ≈ d,
    so the interval is the replicates' percentile spread re-centred on the estimate (shifted by
    value − median of the replicates): a bias-corrected percentile interval.
    """
    X = np.asarray(X, dtype=np.float64)
    rng = np.random.default_rng(seed)
    value = effective_rank(X)
    reps = np.array([effective_rank(X, rng.dirichlet(np.ones(len(X)))) for _ in range(n_boot)])
    lo, hi = _percentiles(reps + (value - np.median(reps)), 0.05)
    return Estimate(value, lo, hi, len(X))
