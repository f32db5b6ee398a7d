"""Tests for medinterp.metrics.anisotropy: analytic cases, the isotropic null (methods.md 5), a slow reference."""
import numpy as np
import pytest

from medinterp.errors import MedinterpError
from medinterp.metrics import local_anisotropy, local_anisotropy_null


def reference_anisotropy(X, k):
    """Slow per-point loop: brute-force neighbours, np.cov, full eigen-decomposition."""
    out = []
    for i in range(len(X)):
        d = np.linalg.norm(X - X[i], axis=1)
        d[i] = -1.0  # the point itself comes first
        pts = X[np.argsort(d)[: k + 1]]
        lam = np.sort(np.linalg.eigvalsh(np.cov(pts, rowvar=False)))[::-1]
        out.append(1.0 - lam[1] / lam[0])
    return np.array(out)


@pytest.mark.parametrize("dim", [2, 3])
def test_collinear_points_give_one(dim):
    t = np.random.default_rng(0).uniform(0, 10, 300)
    direction = np.arange(1.0, dim + 1)
    X = 5.0 + t[:, None] * direction  # exactly on a line
    np.testing.assert_allclose(local_anisotropy(X, k=20), 1.0, atol=1e-9)
    jittered = X + 1e-6 * np.random.default_rng(1).standard_normal(X.shape)
    assert local_anisotropy(jittered, k=20).mean() == pytest.approx(1.0, abs=1e-3)


def test_isotropic_gaussian_gives_037():
    A = local_anisotropy(np.random.default_rng(2).standard_normal((5000, 2)), k=20)
    assert A.shape == (5000,) and A.min() >= 0.0 and A.max() <= 1.0
    assert A.mean() == pytest.approx(0.37, abs=0.02)


@pytest.mark.parametrize("k, expected", [(5, 0.65), (10, 0.49), (20, 0.37), (50, 0.26)])
def test_null_matches_methods_table(k, expected):
    assert local_anisotropy_null(5000, k=k, n_rep=2, seed=k) == pytest.approx(expected, abs=0.03)


def test_null_is_seeded():
    assert local_anisotropy_null(500, seed=3) == local_anisotropy_null(500, seed=3)
    assert local_anisotropy_null(500, seed=3) != local_anisotropy_null(500, seed=4)


@pytest.mark.parametrize("dim, k", [(2, 5), (5, 7), (40, 7)])  # dim 40 > k + 1 uses the Gram-matrix path
def test_matches_slow_reference(dim, k):
    X = np.random.default_rng(dim).standard_normal((60, dim)) * np.linspace(1, 3, dim)
    np.testing.assert_allclose(local_anisotropy(X, k=k), reference_anisotropy(X, k), atol=1e-10)


def test_invariant_to_rotation_scale_and_shift():
    rng = np.random.default_rng(5)
    X = rng.standard_normal((200, 3)) * [3.0, 1.0, 0.5]
    Q, _ = np.linalg.qr(rng.standard_normal((3, 3)))
    np.testing.assert_allclose(local_anisotropy(4.0 * X @ Q + 7.0, k=10), local_anisotropy(X, k=10), atol=1e-9)


def test_noisy_curve_is_line_like_but_a_stretched_blob_is_not():
    rng = np.random.default_rng(6)
    # A thin curve (circle, radius 10, noise 0.05): every 21-point neighbourhood is a short segment.
    theta = rng.uniform(0, 2 * np.pi, 2000)
    curve = 10 * np.c_[np.cos(theta), np.sin(theta)] + 0.05 * rng.standard_normal((2000, 2))
    assert local_anisotropy(curve, k=20).mean() > 0.9
    # A 10:1 stretched Gaussian is globally anisotropic but locally still a round patch: A stays at the null.
    blob = rng.standard_normal((2000, 2)) * [10.0, 1.0]
    assert local_anisotropy(blob, k=20).mean() == pytest.approx(local_anisotropy_null(2000, k=20), abs=0.05)


@pytest.mark.parametrize("k", [100, 500, 1])
def test_k_out_of_range_is_refused(k):
    X = np.random.default_rng(0).standard_normal((100, 2))
    msg = rf"The 'k' parameter of local_anisotropy must be an int in \[2, n_samples-1\] = \[2, 99\]. Got {k} instead."
    with pytest.raises(MedinterpError, match=msg):
        local_anisotropy(X, k=k)


def test_one_dimensional_input_is_refused():
    with pytest.raises(MedinterpError, match="at least 3 rows and 2 columns"):
        local_anisotropy(np.ones((50, 1)), k=5)
