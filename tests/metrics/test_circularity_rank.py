"""Circularity and effective rank on shapes whose answers are known."""
from __future__ import annotations

import numpy as np
import pytest

from medinterp.errors import MedinterpError
from medinterp.metrics.circularity import circularity, circularity_with_ci
from medinterp.metrics.discontinuity import discontinuity_diff_with_ci, discontinuity_score
from medinterp.metrics.rank import effective_rank, effective_rank_with_ci


def path_points(centres, per=4, noise=0.01, seed=0):
    rng = np.random.default_rng(seed)
    X = np.repeat(centres, per, axis=0) + noise * rng.normal(size=(len(centres) * per, centres.shape[1]))
    return X, np.repeat(np.arange(len(centres)), per).astype(float)


def embed(P, d=12, seed=1):
    Q, _ = np.linalg.qr(np.random.default_rng(seed).normal(size=(d, d)))
    return P @ Q[: P.shape[1]]


def test_a_closed_loop_versus_a_straight_line():
    T = 8
    angle = 2 * np.pi * np.arange(T) / T
    loop = embed(np.column_stack([np.cos(angle), np.sin(angle)]))
    line = embed(np.column_stack([np.arange(T), np.zeros(T)]))
    c_loop = circularity(*path_points(loop))
    c_line = circularity(*path_points(line))
    assert c_loop["circular_corr"] > 0.75 and c_loop["circular_r2_gain"] > 0.5  # a full turn peaks near 0.8
    # stage 7 sits one step before stage 0 on the circle: the closure gap equals one step
    assert c_loop["closure_ratio"] == pytest.approx(1.0, abs=0.05)
    assert c_line["closure_ratio"] == pytest.approx(T - 1, rel=0.02)
    assert abs(c_line["circular_r2_gain"]) < 0.01


def test_ci_and_permutation_null():
    T = 6
    angle = 2 * np.pi * np.arange(T) / T
    X, stages = path_points(embed(np.column_stack([np.cos(angle), np.sin(angle)])), per=5, noise=0.05)
    out = circularity_with_ci(X, stages, n_boot=30, n_perm=20, seed=0)
    est, null = out["circular_r2_gain"]
    assert est.ci_low <= est.value <= est.ci_high and est.value > null.ci_high
    assert null.value < 0.2
    with pytest.raises(MedinterpError, match="at least 3 stages"):
        circularity(X[stages < 2], stages[stages < 2])


def test_effective_rank_known_cases():
    rng = np.random.default_rng(0)
    line = np.outer(rng.normal(size=500), rng.normal(size=20))
    assert effective_rank(line) == pytest.approx(1.0, abs=1e-6)
    # k orthogonal directions with equal spread → effective rank ≈ k
    basis = np.linalg.qr(rng.normal(size=(20, 20)))[0][:4]
    flat = rng.choice([-1.0, 1.0], size=(4000, 4)) @ basis
    assert effective_rank(flat) == pytest.approx(4.0, rel=0.02)
    widths = []
    for n in (60, 240, 960):  # a decaying spectrum like real activations; the interval narrows with n
        est = effective_rank_with_ci(rng.normal(size=(n, 64)) * (0.85 ** np.arange(64)), n_boot=60)
        assert est.ci_low < est.value < est.ci_high
        widths.append(est.ci_high - est.ci_low)
    assert widths[0] > widths[1] > widths[2] > 0
    assert 8.5 < effective_rank(rng.normal(size=(300, 10))) <= 10


def test_discontinuity_difference_between_groups():
    rng = np.random.default_rng(2)
    ages = np.repeat(np.arange(1, 31), 3).astype(float)
    d = rng.normal(size=8)
    ramp = np.outer(ages, d) + 0.05 * rng.normal(size=(len(ages), 8))
    jump = ramp + np.outer(ages >= 18, d) * 5
    est = discontinuity_diff_with_ci(jump, ages, ramp, ages, n_boot=100)
    assert est.value == pytest.approx(discontinuity_score(jump, ages) - discontinuity_score(ramp, ages))
    assert est.ci_low > 2  # female with a jump minus male without: clearly positive
    same = discontinuity_diff_with_ci(ramp, ages, ramp + 0.01 * rng.normal(size=ramp.shape), ages, n_boot=100)
    assert same.ci_low < 0 < same.ci_high
