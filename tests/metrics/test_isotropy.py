"""medinterp.metrics.isotropy: the two global anisotropies against methods.md 5 and exact eigenvalues."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from medinterp.errors import MedinterpError
from medinterp.metrics import isotropy
from medinterp.metrics.bootstrap import _boot_indices
from medinterp.metrics.isotropy import anisotropy_cosine, anisotropy_spectral


def spectral_ratio(X: np.ndarray) -> float:
    X = X - X.mean(0)
    lam = np.linalg.eigvalsh(X @ X.T if len(X) < X.shape[1] else X.T @ X)
    return lam[-1] / lam.sum()


def test_spectral_isotropic_rank_one_and_exact():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(5000, 100))
    got = anisotropy_spectral(X, n_boot=50).estimate
    assert got.value == pytest.approx((1 + np.sqrt(100 / 5000)) ** 2 / 100, rel=0.03)  # 0.0128 (MP edge)
    assert got.ci_low < got.value < got.ci_high and got.n == 5000
    rank1 = anisotropy_spectral(np.outer(rng.normal(size=300), rng.normal(size=20)) + 3).estimate
    assert rank1.value == pytest.approx(1.0, abs=1e-12)
    for shape in [(40, 90), (300, 20)]:  # the (n, n) and the (d, d) Gram
        X = rng.normal(size=shape) * np.linspace(0.2, 2, shape[1])
        assert anisotropy_spectral(X).estimate.value == pytest.approx(spectral_ratio(X), rel=1e-10)


@pytest.mark.parametrize("shape,scale", [((600, 40), "flat"), ((600, 40), "graded"), ((150, 200), "graded")])
def test_bootstrap_interval_equals_exact_resampled_eigenvalues(shape, scale):
    rng = np.random.default_rng(1)
    X = rng.normal(size=shape) * (np.linspace(0.2, 3, shape[1]) if scale == "graded" else 1.0)
    got = anisotropy_spectral(X, n_boot=100, seed=5).estimate
    reps = np.array([spectral_ratio(X[i]) for i in _boot_indices(len(X), 100, 5)])
    shift = got.value - np.median(reps)  # the interval is recentred on the value
    want = np.percentile(reps, [2.5, 97.5]) + shift
    width = want[1] - want[0]
    assert got.ci_low == pytest.approx(want[0], abs=0.1 * width)
    assert got.ci_high == pytest.approx(want[1], abs=0.1 * width)
    assert (reps > got.value).mean() > 0.5  # why the recentring: resampling inflates lambda_max


def test_cosine_isotropic_offset_and_rogue_dimension():
    rng = np.random.default_rng(2)
    X = rng.normal(size=(5000, 100))
    assert abs(anisotropy_cosine(X).estimate.value) < 0.01
    offset = anisotropy_cosine(X + 5).estimate
    assert offset.value == pytest.approx(25 / 26, abs=0.005) and offset.n == 10_000  # 0.96
    assert anisotropy_spectral(X + 5).estimate.value == pytest.approx(anisotropy_spectral(X).estimate.value,
                                                                      rel=1e-10)  # blind to the offset
    rogue = X.copy()
    rogue[:, 7] = 50 + 20 * rng.normal(size=5000)  # one dimension of huge mean and variance
    assert anisotropy_cosine(rogue).estimate.value > 0.85
    assert abs(anisotropy_cosine(rogue, standardize=True).estimate.value) < 0.01


def test_cosine_pairs_are_distinct_rows_and_seeded():
    X = np.eye(3)  # orthogonal rows: every pair of distinct rows has cosine 0, a self-pair 1
    got = anisotropy_cosine(X, n_pairs=500).estimate
    assert got.value == 0.0 and got.ci_low == got.ci_high == 0.0
    Y = np.random.default_rng(3).normal(size=(50, 5))
    assert anisotropy_cosine(Y, seed=4) == anisotropy_cosine(torch.from_numpy(Y), seed=4)
    assert anisotropy_cosine(Y, seed=4) != anisotropy_cosine(Y, seed=5)
    U = Y / np.linalg.norm(Y, axis=1, keepdims=True)
    rng = np.random.default_rng(4)  # the documented pair draw
    i, j = rng.integers(0, 50, 10_000), rng.integers(0, 49, 10_000)
    j = j + (j >= i)
    assert anisotropy_cosine(Y, seed=4).estimate.value == pytest.approx((U[i] * U[j]).sum(1).mean(), abs=1e-12)


def test_degenerate_inputs_give_nan_with_a_note():
    got = anisotropy_spectral(np.ones((10, 4)))
    assert np.isnan(got.estimate.value) and got.note == "X has zero variance: no spectrum"
    got = anisotropy_cosine(np.vstack([np.zeros((3, 4)), np.ones((1, 4))]))
    assert np.isnan(got.estimate.value) and got.note == "fewer than 2 rows with a direction (1)"
    assert anisotropy_cosine(np.vstack([np.zeros((2, 2)), np.eye(2)])).note == "2 zero-norm rows left out"
    with pytest.raises(MedinterpError, match="'standardize' parameter of anisotropy_cosine must be a bool"):
        anisotropy_cosine(np.eye(3), standardize="yes")
    with pytest.raises(MedinterpError, match=r"must be a \(n, d\) tensor .* Got shape \(3,\)"):
        anisotropy_spectral(np.ones(3))


def test_ritz_settings_are_what_the_docstring_says():
    assert isotropy.RITZ_DIM == 32 and isotropy.POWER_STEPS == 3
