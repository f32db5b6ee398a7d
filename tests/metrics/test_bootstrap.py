"""Tests for medinterp.metrics.bootstrap: determinism, agreement with normal theory, input checks."""
import dataclasses

import numpy as np
import pytest

from medinterp.errors import MedinterpError
from medinterp.metrics import Estimate, bootstrap_ci, finite_mean_with_ci, mean_with_ci


def test_bootstrap_ci_is_deterministic_under_a_seed():
    x = np.random.default_rng(1).standard_normal(300)
    assert bootstrap_ci(x, seed=7) == bootstrap_ci(x, seed=7)
    assert bootstrap_ci(x, seed=7) != bootstrap_ci(x, seed=8)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_mean_ci_matches_normal_theory(seed):
    # n = 2000, sigma = 3: the 95% CI of the mean is mean +- 1.96 sigma / sqrt(n) (half-width 0.1315).
    x = np.random.default_rng(seed).normal(5.0, 3.0, size=2000)
    half = 1.96 * x.std(ddof=1) / np.sqrt(len(x))
    est = mean_with_ci(x, n_boot=1000, seed=seed)
    assert est.value == pytest.approx(x.mean())
    assert est.n == 2000
    assert est.value - est.ci_low == pytest.approx(half, rel=0.2)
    assert est.ci_high - est.value == pytest.approx(half, rel=0.2)


def test_mean_with_ci_equals_bootstrap_ci_of_np_mean():
    # Same seed -> same (n_boot, n) index matrix -> identical intervals (vectorized vs loop).
    x = np.random.default_rng(3).exponential(size=150)
    est = mean_with_ci(x, n_boot=300, alpha=0.1, seed=4)
    lo, hi = bootstrap_ci(x, np.mean, n_boot=300, alpha=0.1, seed=4)
    assert (est.ci_low, est.ci_high) == pytest.approx((lo, hi), rel=1e-12)


def test_bootstrap_ci_resamples_whole_rows():
    # Paired rows (a, a + 1): the difference of column means is exactly 1 in every resample.
    a = np.random.default_rng(5).standard_normal(100)
    pairs = np.c_[a, a + 1.0]
    lo, hi = bootstrap_ci(pairs, lambda r: r[:, 1].mean() - r[:, 0].mean(), n_boot=50)
    assert lo == pytest.approx(1.0) and hi == pytest.approx(1.0)


def test_wider_alpha_gives_narrower_interval():
    x = np.random.default_rng(6).standard_normal(500)
    w95 = np.diff(bootstrap_ci(x, alpha=0.05, seed=0))[0]
    w50 = np.diff(bootstrap_ci(x, alpha=0.5, seed=0))[0]
    assert w50 < 0.5 * w95


def test_estimate_is_frozen():
    est = Estimate(0.5, 0.4, 0.6, 10)
    with pytest.raises(dataclasses.FrozenInstanceError):
        est.value = 1.0


@pytest.mark.parametrize("kwargs, match", [
    ({"samples": [1.0]}, "at least 2"),
    ({"samples": [1.0, 2.0], "n_boot": 0}, "'n_boot' parameter of bootstrap_ci must be an int >= 1. Got 0"),
    ({"samples": [1.0, 2.0], "alpha": 1.5}, "'alpha' parameter of bootstrap_ci must be a float in \\(0, 1\\)"),
])
def test_bootstrap_ci_rejects_bad_input(kwargs, match):
    with pytest.raises(MedinterpError, match=match):
        bootstrap_ci(**kwargs)


def test_mean_with_ci_rejects_non_finite():
    with pytest.raises(MedinterpError, match="1 non-finite values"):
        mean_with_ci([1.0, np.nan, 2.0])


def test_finite_mean_with_ci_drops_non_finite_values_and_has_no_interval_below_two():
    """The per-layer mean the model methods report: mean_with_ci over the finite values, n counting them."""
    x = np.array([1.0, np.nan, 3.0, np.inf, 8.0])
    assert finite_mean_with_ci(x, n_boot=50, seed=3) == mean_with_ci([1.0, 3.0, 8.0], n_boot=50, seed=3)
    assert finite_mean_with_ci(x, n_boot=50, seed=3).value == 4.0
    one = finite_mean_with_ci([np.nan, 2.5])
    assert (one.value, one.n) == (2.5, 1) and np.isnan(one.ci_low) and np.isnan(one.ci_high)
    none = finite_mean_with_ci([np.nan])
    assert none.n == 0 and np.isnan([none.value, none.ci_low, none.ci_high]).all()
