"""Tests for medinterp.metrics.cluster against scikit-learn and analytic values (methods.md 5)."""
import numpy as np
import pytest
from sklearn.metrics import pairwise_distances, silhouette_score

from medinterp.errors import MedinterpError
from medinterp.metrics import shuffled_silhouette_null, silhouette_with_ci


def two_blobs(n_per=200, dim=10, shift=10.0, seed=0):
    """2 x n_per unit-variance Gaussian points, means 0 and `shift` in every coordinate."""
    rng = np.random.default_rng(seed)
    X = np.r_[rng.standard_normal((n_per, dim)), rng.standard_normal((n_per, dim)) + shift]
    return X, np.repeat([0, 1], n_per)


@pytest.mark.parametrize("metric", ["euclidean", "cosine"])
def test_value_equals_sklearn_silhouette_score(metric):
    rng = np.random.default_rng(1)
    X = rng.standard_normal((150, 8)) + np.repeat(rng.standard_normal((3, 8)), 50, axis=0)
    labels = np.repeat(["a", "b", "c"], 50)
    est = silhouette_with_ci(X, labels, metric=metric, n_boot=50)
    assert est.value == pytest.approx(silhouette_score(X, labels, metric=metric), abs=1e-12)
    assert est.n == 150


def test_precomputed_distances_give_the_same_value():
    X, y = two_blobs(50, shift=1.0)
    D = pairwise_distances(X, metric="cosine")
    assert silhouette_with_ci(D, y, metric="precomputed").value == pytest.approx(
        silhouette_with_ci(X, y, metric="cosine").value, abs=1e-12)


def test_separated_blobs_give_0864():
    est = silhouette_with_ci(*two_blobs())
    assert est.value == pytest.approx(0.864, abs=0.01)
    assert est.ci_low <= est.value <= est.ci_high


def test_random_labels_give_zero_and_null_contains_zero():
    X = np.random.default_rng(2).standard_normal((400, 10))
    labels = np.random.default_rng(3).integers(0, 2, 400)
    assert abs(silhouette_with_ci(X, labels).value) < 0.02
    null = shuffled_silhouette_null(X, labels, n_perm=20)
    assert abs(null.value) < 0.02 and null.ci_low <= 0.0 <= null.ci_high
    assert null.n == 400


def test_null_sits_far_below_real_structure():
    X, y = two_blobs()
    null = shuffled_silhouette_null(X, y, n_perm=10, seed=1)
    assert abs(null.value) < 0.02 and null.ci_high < 0.05
    assert null == shuffled_silhouette_null(X, y, n_perm=10, seed=1)  # seeded


def test_ci_contains_value_and_narrows_with_n():
    widths = []
    for n_per in (50, 500):
        est = silhouette_with_ci(*two_blobs(n_per, shift=0.8, seed=4))
        assert est.ci_low < est.value < est.ci_high
        widths.append(est.ci_high - est.ci_low)
    assert widths[1] < 0.5 * widths[0]  # ~ 1/sqrt(n): expected ratio 0.32


def test_one_class_is_refused_with_a_clear_message():
    X = np.random.default_rng(0).standard_normal((10, 3))
    with pytest.raises(MedinterpError, match=r"needs at least 2 classes in 'labels'; got 1 \('x'\)"):
        silhouette_with_ci(X, ["x"] * 10)
    with pytest.raises(MedinterpError, match="at most n_samples-1 = 9 classes"):
        shuffled_silhouette_null(X, np.arange(10))


@pytest.mark.parametrize("X, labels, match", [
    (np.ones((10, 3)), [0, 1] * 4, "'labels' parameter of silhouette_with_ci must be a 1-D array of length 10"),
    (np.full((10, 3), np.nan), [0, 1] * 5, "'X' parameter of silhouette_with_ci .* Got 30 non-finite"),
    (np.ones(10), [0, 1] * 5, r"Got shape \(10,\) instead"),
])
def test_bad_shapes_are_refused(X, labels, match):
    with pytest.raises(MedinterpError, match=match):
        silhouette_with_ci(X, labels)


def test_precomputed_needs_a_distance_matrix():
    with pytest.raises(MedinterpError, match="zero diagonal"):
        silhouette_with_ci(np.ones((6, 6)), [0, 0, 0, 1, 1, 1], metric="precomputed")
