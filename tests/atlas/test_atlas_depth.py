"""Relative depth on hand-made curves: resampling to a common grid, depth intervals, interval Jaccard, Spearman."""
from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.stats import spearmanr

from medinterp.atlas.depth import (depth_intervals, grid, interval_jaccard, measure, rank_correlation, relative_depth,
                                   resample)
from medinterp.errors import MedinterpError


def test_relative_depth_and_grid():
    assert relative_depth(9, 18) == 0.5 and relative_depth(15, 30) == 0.5 and relative_depth(30, 30) == 1.0
    assert grid(5).tolist() == [0.0, 0.25, 0.5, 0.75, 1.0] and grid().size == 21
    with pytest.raises(MedinterpError, match="n_layers"):
        relative_depth(1, 0)


def test_resample_interpolates_between_read_outs():
    depths = np.array([0.0, 0.125, 0.25, 0.6, 1.0])
    # 4 blocks, v = 4 l: at depth d the value is 16 d
    np.testing.assert_allclose(resample([0, 4, 8, 12, 16], 4, depths), [0, 2, 4, 9.6, 16])
    # 2 blocks [0, 2, 10]: depth 0.25 is halfway between L0 and L1, 0.6 is 20 % of the way from L1 to L2
    np.testing.assert_allclose(resample([0, 2, 10], 2, depths), [0, 0.5, 1.0, 3.6, 10])


def test_the_same_profile_on_different_depths_resamples_alike():
    """Gemma-3-270M (18 blocks) and SmolLM2-135M (30 blocks) with the same curve over relative depth."""
    g = grid()
    a = resample([math.sin(3 * l / 18) for l in range(19)], 18, g)
    b = resample([math.sin(3 * l / 30) for l in range(31)], 30, g)
    np.testing.assert_allclose(a, b, atol=0.005)  # both ≈ sin(3 d); linear interpolation error < 1/8 (3/18)² max|f''|


def test_resample_skips_missing_values_and_never_extrapolates():
    depths = np.array([0.0, 0.125, 0.25, 0.5, 1.0])
    out = resample([None, 1.0, float("nan"), 3.0, None], 4, depths)
    assert np.isnan(out[[0, 1, 4]]).all()  # before L1 and after L3: no value
    np.testing.assert_allclose(out[[2, 3]], [1.0, 2.0])  # L2 interpolated from L1 and L3
    assert np.isnan(resample([None] * 5, 4, depths)).all()
    with pytest.raises(MedinterpError, match="5 values"):
        resample([1, 2, 3], 4, depths)


def test_depth_intervals_give_each_read_out_half_a_layer_each_side():
    assert depth_intervals([[2, 3]], 4) == [(0.375, 0.875)]
    assert depth_intervals([[0, 0], [4, 4]], 4) == [(0.0, 0.125), (0.875, 1.0)]  # clipped at the ends
    assert depth_intervals([[0, 8]], 8) == [(0.0, 1.0)]


def test_interval_jaccard_by_hand():
    a = depth_intervals([[1, 2]], 4)  # [0.125, 0.625]
    b = depth_intervals([[2, 5]], 8)  # [0.1875, 0.6875]
    # intersection [0.1875, 0.625] = 0.4375; union [0.125, 0.6875] = 0.5625
    assert interval_jaccard(a, b) == pytest.approx(0.4375 / 0.5625) == pytest.approx(7 / 9)
    assert interval_jaccard(a, a) == 1.0 and interval_jaccard(b, a) == interval_jaccard(a, b)
    assert interval_jaccard([(0.0, 0.2)], [(0.5, 0.7)]) == 0.0
    assert interval_jaccard([(0.0, 0.2), (0.5, 0.7)], [(0.1, 0.6)]) == pytest.approx(0.2 / 0.7)  # two pieces
    assert interval_jaccard([(0.0, 0.5), (0.25, 0.75)], [(0.0, 0.75)]) == pytest.approx(1.0)  # overlaps merge
    assert interval_jaccard([(0.1, 0.3)], []) == 0.0
    assert math.isnan(interval_jaccard([], []))  # neither selected a layer: undefined, not 0
    assert measure([(0.0, 0.5), (0.25, 0.75), (0.9, 1.0)]) == pytest.approx(0.85)


def test_rank_correlation_is_spearman_with_a_bootstrap_ci():
    g = grid()
    up, down = g ** 2, 1 - g
    assert rank_correlation(up, g).value == pytest.approx(1.0) and rank_correlation(down, g).value == pytest.approx(-1.0)
    rng = np.random.default_rng(3)
    x, y = rng.normal(size=21), rng.normal(size=21)
    est = rank_correlation(x, y)
    assert est.value == pytest.approx(spearmanr(x, y).statistic) and est.n == 21
    assert est.ci_low < est.value < est.ci_high
    x[:5] = np.nan  # only the points where both are finite
    assert rank_correlation(x, y).value == pytest.approx(spearmanr(x[5:], y[5:]).statistic)
    assert rank_correlation(x, y).n == 16
    assert math.isnan(rank_correlation(g[:2], g[:2]).value)  # fewer than 3 points
    assert math.isnan(rank_correlation(np.ones(21), g).value)  # a constant curve has no ranks
