"""Local anisotropy: how line-like each point's neighbourhood is (the paper's age metric, methods.md 1.1).

For point i, take x_i and its k nearest neighbours (k + 1 points), form their covariance, and let
lambda_1 >= lambda_2 be its two largest eigenvalues. A_i = 1 - lambda_2 / lambda_1, in [0, 1]:
1 on a line (a 1-D ordered code such as age), small in a round blob. It is NOT 0 for isotropic data:
the covariance of only k + 1 points is noisy, so an isotropic 2-D Gaussian gives mean A = 0.37 at
k = 20 (0.65, 0.49, 0.26, 0.15 at k = 5, 10, 50, 200; methods.md 5 and pitfall 12). Always compare
against :func:`local_anisotropy_null`. The paper uses k = 20 in 2-D UMAP space; in raw space 21 points
give a rank-deficient covariance, which the top-two-eigenvalue ratio tolerates but makes less meaningful.
"""
from __future__ import annotations

import numpy as np
from sklearn.neighbors import NearestNeighbors

from medinterp.metrics._validation import check_int, check_matrix

_CHUNK_ELEMENTS = 1 << 24  # bound the (chunk, k+1, d) neighbourhood array to ~128 MB of float64


def _top_two_eigenvalues(P: np.ndarray) -> np.ndarray:
    """(m, k+1, d) neighbourhoods -> (m, 2) eigenvalues [lambda_1, lambda_2] of each covariance."""
    Y = P - P.mean(axis=1, keepdims=True)  # centre each neighbourhood
    # The nonzero eigenvalues of Y^T Y (d x d) and Y Y^T ((k+1) x (k+1)) coincide; use the smaller one.
    # The 1/k normalisation of the covariance cancels in the ratio and is dropped.
    if Y.shape[2] <= Y.shape[1]:
        M = np.einsum("mpd,mpe->mde", Y, Y)
    else:
        M = np.einsum("mpd,mqd->mpq", Y, Y)
    w = np.linalg.eigvalsh(M)  # ascending, (m, size)
    return np.clip(w[:, ::-1][:, :2], 0.0, None)  # rounding can make a zero eigenvalue slightly negative


def local_anisotropy(X, k: int = 20) -> np.ndarray:
    """Per-point local anisotropy A_i = 1 - lambda_2 / lambda_1 of x_i and its k nearest neighbours.

    X: (n, d) points, d >= 2, n >= 3; k: int in [2, n - 1]. Returns A: (n,) in [0, 1]. Neighbours are
    Euclidean (sklearn ``NearestNeighbors``), excluding i itself, which is then added, so each covariance
    uses exactly k + 1 points. A_i is NaN where all k + 1 points coincide (lambda_1 = 0).
    Reference: Marinescu et al., ICLR 2026 (arXiv 2510.11390), age-domain geometry.
    """
    fn = "local_anisotropy"
    X = check_matrix(X, fn, min_rows=3, min_cols=2)
    n = X.shape[0]
    k = check_int(k, "k", fn, 2, n - 1, "n_samples-1")
    # kneighbors() without a query excludes each point from its own neighbour list, even with duplicates.
    _, nbrs = NearestNeighbors(n_neighbors=k).fit(X).kneighbors()
    idx = np.concatenate([np.arange(n)[:, None], nbrs], axis=1)  # (n, k+1): the point, then its neighbours
    chunk = max(1, _CHUNK_ELEMENTS // ((k + 1) * X.shape[1]))
    lam = np.concatenate([_top_two_eigenvalues(X[idx[s:s + chunk]]) for s in range(0, n, chunk)])
    with np.errstate(invalid="ignore", divide="ignore"):
        return 1.0 - lam[:, 1] / lam[:, 0]


def local_anisotropy_null(n: int, k: int = 20, dim: int = 2, n_rep: int = 3, seed: int = 0) -> float:
    """Mean local anisotropy of an isotropic standard Gaussian sample: the chance level of the metric.

    Draws ``n_rep`` samples of n points in ``dim`` dimensions (rng = ``np.random.default_rng(seed)``) and
    returns the mean over samples of mean_i A_i. Use the same n, k and dim as the data being compared.
    Expected at dim = 2, n = 5000: 0.65, 0.49, 0.37, 0.26, 0.15 for k = 5, 10, 20, 50, 200 (methods.md 5).
    """
    fn = "local_anisotropy_null"
    n = check_int(n, "n", fn, 3)
    k = check_int(k, "k", fn, 2, n - 1, "n-1")
    dim = check_int(dim, "dim", fn, 2)
    n_rep = check_int(n_rep, "n_rep", fn, 1)
    rng = np.random.default_rng(seed)
    return float(np.mean([local_anisotropy(rng.standard_normal((n, dim)), k).mean() for _ in range(n_rep)]))
