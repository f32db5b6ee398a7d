"""medinterp.metrics.intrinsic_dim against scikit-dimension 0.5.0 and manifolds of known dimension."""
from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from sklearn.neighbors import NearestNeighbors

from medinterp.errors import MedinterpError
from medinterp.metrics.device import nearest_distances
from medinterp.metrics.intrinsic_dim import intrinsic_dims, mle_id, twonn

skdim = pytest.importorskip("skdim")


def embedded(n: int, dim: int, D: int, seed: int) -> np.ndarray:
    """n standard-Gaussian points of a dim-dimensional subspace of R^D (random orthonormal basis)."""
    rng = np.random.default_rng(seed)
    basis = np.linalg.qr(rng.normal(size=(D, D)))[0][:dim]
    return rng.normal(size=(n, dim)) @ basis + rng.normal(size=D)


def reference(X: np.ndarray, k: int = 20) -> tuple[float, float]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return (skdim.id.TwoNN(discard_fraction=0.1).fit(X).dimension_,
                skdim.id.MLE().fit(X, n_neighbors=k).dimension_)


@pytest.mark.parametrize("n,dim,D,seed", [(400, 3, 10, 0), (1000, 6, 40, 1), (700, 2, 30, 2), (300, 12, 12, 3)])
def test_equal_to_scikit_dimension(n, dim, D, seed):
    X = embedded(n, dim, D, seed) + 0.01 * np.random.default_rng(seed).normal(size=(n, D))
    want_twonn, want_mle = reference(X)
    got = intrinsic_dims(X)
    assert got["id_twonn"].estimate.value == pytest.approx(want_twonn, rel=1e-6)  # the 2 % of issue 10, met exactly
    assert got["id_mle"].estimate.value == pytest.approx(want_mle, rel=1e-6)
    assert got["id_twonn"] == twonn(X) and got["id_mle"] == mle_id(X)
    assert mle_id(X, k=7).estimate.value == pytest.approx(reference(X, k=7)[1], rel=1e-6)
    for s in got.values():
        assert s.estimate.ci_low < s.estimate.value < s.estimate.ci_high and s.estimate.n == n and s.note == ""


def test_linear_subspace_and_curved_manifolds():
    X = torch.from_numpy(embedded(5000, 3, 100, 4)).float()  # methods.md 5: TwoNN 3.03-3.06
    got = intrinsic_dims(X)
    assert 2.95 < got["id_twonn"].estimate.value < 3.15 and 2.8 < got["id_mle"].estimate.value < 3.2
    rng = np.random.default_rng(5)
    rotation = np.linalg.qr(rng.normal(size=(50, 50)))[0]
    sphere = rng.normal(size=(3000, 3))
    sphere /= np.linalg.norm(sphere, axis=1, keepdims=True)  # the unit 2-sphere, curved
    t = 1.5 * np.pi * (1 + 2 * rng.random(3000))
    roll = np.c_[t * np.cos(t), 20 * rng.random(3000), t * np.sin(t)]  # a swiss roll, 2-D
    for M in (sphere, roll):
        X = np.c_[M, np.zeros((3000, 47))] @ rotation  # embedded in R^50 by a random rotation
        got = intrinsic_dims(X)
        assert got["id_twonn"].estimate.value == pytest.approx(2.0, abs=0.15)
        assert got["id_mle"].estimate.value == pytest.approx(2.0, abs=0.2)


def test_duplicates_are_dropped_first():
    X = embedded(600, 4, 20, 6)
    dup = np.vstack([X, X[:90], X[:10]])  # 100 repeated rows, as repeated tokens give
    assert (nearest_distances(torch.from_numpy(dup), 2)[:, 0] == 0).sum() == 190  # r1 = 0: mu undefined
    got = intrinsic_dims(dup)
    want = reference(np.unique(dup, axis=0))
    assert got["id_twonn"].estimate.value == pytest.approx(want[0], rel=1e-6)
    assert got["id_mle"].estimate.value == pytest.approx(want[1], rel=1e-6)
    assert got["id_twonn"].note == got["id_mle"].note == "100 duplicate rows dropped"
    assert got["id_twonn"].estimate.n == 600


def test_nearest_distances_equal_scikit_learn_across_chunks():
    X = np.random.default_rng(7).normal(size=(300, 30)) * 100 + 1e4  # a large offset: centring keeps it exact
    want = NearestNeighbors(n_neighbors=5).fit(X).kneighbors()[0]
    for chunk in (1 << 25, 300 * 7):  # one chunk / 43 chunks of 7 rows
        got = nearest_distances(torch.from_numpy(X), 5, chunk_elements=chunk)
        np.testing.assert_allclose(got.numpy(), want, rtol=1e-10)
    with pytest.raises(MedinterpError, match=r"k must be in \[1, 299\]; got 300"):
        nearest_distances(torch.from_numpy(X), 300)


def test_too_few_rows_and_bad_parameters():
    X = embedded(15, 2, 5, 8)
    got = intrinsic_dims(X)
    assert np.isfinite(got["id_twonn"].estimate.value)
    assert np.isnan(got["id_mle"].estimate.value)
    assert got["id_mle"].note == "MLE with k = 20 needs at least k + 1 = 21 distinct rows; got 15"
    assert mle_id(X).note == got["id_mle"].note
    got = intrinsic_dims(np.vstack([X[:2]] * 4))
    assert got["id_twonn"].note == "6 duplicate rows dropped; TwoNN needs at least 3 distinct rows; got 2"
    assert np.isnan(twonn(X[:1]).estimate.value)
    with pytest.raises(MedinterpError, match=r"'discard_fraction' parameter of twonn must be a float in \(0, 1\)"):
        twonn(X, discard_fraction=1.0)
    with pytest.raises(MedinterpError, match="'k' parameter of mle_id must be an int >= 2"):
        mle_id(X, k=1)
