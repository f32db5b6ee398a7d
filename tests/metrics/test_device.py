"""medinterp.metrics.device (torch) against scikit-learn and UmapGeometry.neighbours, on CPU tensors."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.metrics import pairwise_distances
from sklearn.metrics import silhouette_samples as sk_silhouette_samples

from medinterp.errors import MedinterpError
from medinterp.methods.umap_geometry import UmapGeometry
from medinterp.metrics import device


def clusters(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    labels = np.repeat(np.arange(4), [30, 20, 9, 1])  # one singleton class
    X = rng.normal(size=(60, 12)) + 3 * rng.normal(size=(4, 12))[labels]
    return X.astype(np.float32), labels


@pytest.mark.parametrize("metric", ["euclidean", "cosine"])
def test_distances_and_silhouette_equal_scikit_learn(metric):
    X, labels = clusters()
    want = pairwise_distances(X.astype(np.float64), metric=metric)
    np.fill_diagonal(want, 0.0)
    D = device.distances(torch.from_numpy(X), metric)
    np.testing.assert_allclose(D.numpy(), want, rtol=0, atol=1e-6)
    s = device.silhouette_samples(D, torch.from_numpy(labels)).numpy()
    np.testing.assert_allclose(s, sk_silhouette_samples(want, labels, metric="precomputed"), rtol=0, atol=1e-6)
    assert s[labels == 3] == 0.0 and s.mean() > 0.3  # the singleton is 0; the clusters separate


@pytest.mark.parametrize("metric", ["euclidean", "cosine"])
def test_neighbours_equal_umap_geometry(metric):
    X, _ = clusters(1)
    idx, dist = UmapGeometry(metric=metric, n_neighbors=10).neighbours(X)
    got_idx, got_dist = device.neighbours(torch.from_numpy(X), 10, metric)
    np.testing.assert_array_equal(got_idx.numpy(), idx)
    np.testing.assert_allclose(got_dist.numpy(), dist, rtol=0, atol=1e-6)
    assert (got_idx[:, 0].numpy() == np.arange(len(X))).all()


def test_bad_inputs_name_the_choices():
    X = torch.zeros(5, 2)
    with pytest.raises(MedinterpError, match="manhattan"):
        device.distances(X, "manhattan")
    with pytest.raises(MedinterpError, match=r"k must be in \[1, 5\]; got 6"):
        device.neighbours(X, 6)
    with pytest.raises(MedinterpError, match="2 <= classes <= N - 1; got 1 classes in 5"):
        device.silhouette_samples(device.distances(torch.rand(5, 2)), torch.zeros(5, dtype=torch.long))
