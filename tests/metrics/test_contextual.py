"""medinterp.metrics.contextual: Ethayarajh's measures against hand computations, sklearn PCA and methods.md 5."""
from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch
from sklearn.decomposition import PCA

from medinterp.errors import MedinterpError
from medinterp.metrics.contextual import intra_similarity, mev, self_similarity


def cos(a: np.ndarray, b: np.ndarray) -> float:
    return float(a @ b / np.linalg.norm(a) / np.linalg.norm(b))


def test_identical_vectors_are_fully_static():
    V = np.tile(np.random.default_rng(0).normal(size=(3, 1, 16)), (1, 5, 1))  # 3 terms, 5 identical contexts
    np.testing.assert_allclose(self_similarity(V).numpy(), 1.0, atol=1e-12)
    np.testing.assert_array_equal(mev(V).numpy(), 1.0)


def test_self_similarity_is_the_mean_over_distinct_pairs():
    V = np.random.default_rng(1).normal(size=(4, 6, 8)) + 0.7
    want = [np.mean([cos(v[a], v[b]) for a, b in itertools.combinations(range(6), 2)]) for v in V]
    np.testing.assert_allclose(self_similarity(torch.from_numpy(V)).numpy(), want, atol=1e-12)


def test_mev_is_centred_pca_not_an_uncentred_svd():
    rng = np.random.default_rng(2)
    V = rng.normal(size=(2, 400, 36)) + 10 * rng.normal(size=(2, 1, 36))  # offset clouds (methods.md 5)
    got = mev(V).numpy()
    np.testing.assert_allclose(got, [PCA().fit(v).explained_variance_ratio_[0] for v in V], rtol=1e-10)
    assert got.max() < 0.06  # ~ (1 + sqrt(d / C))^2 / d = 0.044 for an isotropic cloud
    uncentred = [np.linalg.svd(v, compute_uv=False)[0] ** 2 / (v**2).sum() for v in V]
    assert min(uncentred) > 0.95  # what the reference's uncentred SVD reports for the same cloud


def test_intra_similarity_small_case_by_hand():
    rows = np.array([[1.0, 0.0], [0.0, 1.0], [3.0, 4.0], [2.0, 2.0], [-2.0, -2.0]])
    groups = np.array([9, 9, 9, 4, 4])  # group 4 comes first (sorted ids); its mean is zero
    mean9 = np.array([4.0, 5.0]) / 3
    want9 = np.mean([cos(r, mean9) for r in rows[:3]])
    got = intra_similarity(rows, groups).numpy()
    np.testing.assert_allclose(got, [0.0, want9], atol=1e-12)
    assert intra_similarity(rows[:3], np.array([0, 1, 2])).tolist() == [1.0, 1.0, 1.0]  # one-token prompts


def test_bad_input():
    with pytest.raises(MedinterpError, match=r"at least 2 contexts per term .* Got shape \(3, 1, 4\)"):
        mev(np.ones((3, 1, 4)))
    with pytest.raises(MedinterpError, match=r"must be a \(n_terms, n_contexts, d\) tensor"):
        self_similarity(np.ones((3, 4)))
    with pytest.raises(MedinterpError, match="'groups' parameter of intra_similarity"):
        intra_similarity(np.ones((3, 4)), np.array([0, 1]))
