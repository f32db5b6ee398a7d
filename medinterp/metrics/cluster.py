"""Silhouette of a labelled point cloud, with a bootstrap CI and a shuffled-label null.

The silhouette (Rousseeuw 1987, J. Comput. Appl. Math. 20:53-65) of sample i is
s(i) = (b(i) - a(i)) / max(a(i), b(i)), where a(i) is the mean distance from i to the other members of
its class and b(i) the smallest mean distance from i to another class; s(i) = 0 for a singleton class.
The score is the mean of s(i), in [-1, 1]: 1 = tight, well-separated classes, ~0 = no class structure
(random labels), < 0 = points closer to another class. Defined for 2 <= n_classes <= n_samples - 1.
The paper computes it in 30-D UMAP space; we also report it in raw/PCA space with cosine distance and
against a shuffled-label null (methods.md 1.1). Computed with scikit-learn's ``silhouette_samples``.

Both functions accept ``metric="precomputed"`` with X an (n, n) distance matrix (zero diagonal), so a
caller scoring several labelings of the same points computes the distances once.
"""
from __future__ import annotations

from collections.abc import Callable

import numpy as np
from sklearn.metrics import pairwise_distances, silhouette_samples

from medinterp.errors import MedinterpError
from medinterp.metrics._validation import check_int, check_labels, check_matrix
from medinterp.metrics.bootstrap import Estimate, mean_with_ci


def _check_points(X, labels, metric: str, fn: str) -> tuple[np.ndarray, np.ndarray]:
    """Validate X (points, or a square distance matrix when precomputed) and labels (2..n-1 classes)."""
    X = check_matrix(X, fn, min_rows=3)
    if metric == "precomputed":
        if X.shape[0] != X.shape[1] or np.any(np.abs(np.diag(X)) > 1e-12) or np.any(X < 0):
            raise MedinterpError(f"The 'X' parameter of {fn} with metric='precomputed' must be a square "
                                 f"non-negative distance matrix with a zero diagonal. Got shape {X.shape} instead.")
    return X, check_labels(labels, X.shape[0], fn)


SampleFn = Callable[[np.ndarray, np.ndarray], np.ndarray]  # (D (n, n), labels (n,)) -> s(i) (n,)


def _samples(X: np.ndarray, labels: np.ndarray, metric: str, samples: SampleFn | None) -> np.ndarray:
    """Per-sample s(i): scikit-learn's, or ``samples(D, labels)`` on a precomputed matrix (e.g. on a GPU)."""
    if samples is None or metric != "precomputed":
        return silhouette_samples(X, labels, metric=metric)
    return samples(X, labels)


def silhouette_with_ci(X, labels, metric: str = "euclidean", n_boot: int = 200, seed: int = 0,
                       samples: SampleFn | None = None) -> Estimate:
    """Mean silhouette of ``labels`` on ``X`` with a percentile-bootstrap 95% CI.

    X: (n, d) points, or (n, n) distances with ``metric="precomputed"``; labels: (n,) with
    2 <= n_classes <= n - 1; metric: any ``sklearn.metrics.pairwise_distances`` metric.
    value = mean_i s(i), identical to ``sklearn.metrics.silhouette_score(X, labels, metric=metric)``.

    CI: the per-sample s(i) are computed ONCE on the full set and the mean of s is bootstrapped over
    samples. We do not resample points and recompute the silhouette: a resample holds duplicated points
    at distance 0 from each other, which shrinks a(i) and biases the silhouette upward. The CI therefore
    reflects which points were sampled, holding the class geometry fixed.
    ``samples``: computes s(i) from a precomputed matrix instead of scikit-learn (equal to float round-off,
    :func:`medinterp.metrics.device.silhouette_samples`); ignored for other metrics.
    """
    fn = "silhouette_with_ci"
    X, labels = _check_points(X, labels, metric, fn)
    n_boot = check_int(n_boot, "n_boot", fn, 1)
    s = _samples(X, labels, metric, samples)  # (n,) per-sample s(i)
    return mean_with_ci(s, n_boot=n_boot, seed=seed)


def shuffled_silhouette_null(X, labels, metric: str = "euclidean", n_perm: int = 20, seed: int = 0,
                             samples: SampleFn | None = None) -> Estimate:
    """Silhouette expected by chance: the score under random permutations of ``labels``.

    Each permutation keeps the class sizes and the points and only breaks the point-label link.
    value = mean silhouette over ``n_perm`` permutations; CI = the 2.5th and 97.5th percentiles of the
    permutation distribution (a 95% null band, not a CI of the mean); n = number of samples. Shapes and
    metrics as in :func:`silhouette_with_ci`. The distance matrix is computed once and reused
    (O(n^2) memory: 200 MB at n = 5000). ``samples`` as in :func:`silhouette_with_ci`.
    """
    fn = "shuffled_silhouette_null"
    X, labels = _check_points(X, labels, metric, fn)
    n_perm = check_int(n_perm, "n_perm", fn, 1)
    D = X if metric == "precomputed" else pairwise_distances(X, metric=metric)  # (n, n)
    rng = np.random.default_rng(seed)
    scores = np.array([_samples(D, rng.permutation(labels), "precomputed", samples).mean()
                       for _ in range(n_perm)])
    lo, hi = np.percentile(scores, [2.5, 97.5])
    return Estimate(float(scores.mean()), float(lo), float(hi), int(X.shape[0]))
