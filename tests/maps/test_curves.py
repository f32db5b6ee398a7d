"""Smoothing and interval rules on synthetic curves with known answers (methods.md §1.5)."""
from __future__ import annotations

import math

import numpy as np
import pytest

from medinterp.errors import MedinterpError
from medinterp.maps import curves


def explicit_smooth(values, sigma=1.0):
    """A second implementation: normalised Gaussian weights, radius round(4σ), edges clamped (mode nearest)."""
    r = int(4 * sigma + 0.5)
    w = np.exp(-np.arange(-r, r + 1) ** 2 / (2 * sigma**2))
    w /= w.sum()
    n = len(values)
    return np.array([sum(w[k + r] * values[min(max(i - k, 0), n - 1)] for k in range(-r, r + 1)) for i in range(n)])


# -- smoothing ---------------------------------------------------------------------------------------
def test_smooth_equals_gaussian_kernel_with_nearest_edges():
    v = np.array([3.0, 0.0, 0.0, 1.0, 5.0, 2.0, 0.0, 0.0, 0.0, 4.0])
    np.testing.assert_allclose(curves.smooth(v, 1.0), explicit_smooth(v, 1.0), atol=1e-12)
    np.testing.assert_allclose(curves.smooth(v, 2.0), explicit_smooth(v, 2.0), atol=1e-12)


def test_nearest_mode_keeps_flat_edges_flat_and_conserves_level():
    # With zero padding ("constant"), the ends of a constant curve would sag to ~0.6 of its level.
    np.testing.assert_allclose(curves.smooth(np.full(7, 2.5)), 2.5, atol=1e-12)
    s = curves.smooth(np.array([1.0] * 6 + [0.0] * 6))
    assert s[0] == pytest.approx(1.0, abs=1e-12) and s[-1] == pytest.approx(0.0, abs=1e-12)
    assert s[:3].min() > 0.99 and np.all(np.diff(s) <= 1e-15)  # monotone step stays monotone


def test_smooth_peak_value_matches_the_normal_density():
    # A unit spike smoothed with σ = 1 peaks at w0 = 1 / Σ_k exp(-k²/2) ≈ 1/√(2π) = 0.3989.
    v = np.zeros(11)
    v[5] = 1.0
    assert curves.smooth(v)[5] == pytest.approx(1 / sum(math.exp(-k * k / 2) for k in range(-4, 5)), rel=1e-12)
    assert curves.smooth(v)[5] == pytest.approx(0.39894, abs=1e-4)


def test_sigma_zero_is_identity_and_bad_input_is_one_line():
    v = [1.0, 3.0, 2.0]
    np.testing.assert_array_equal(curves.smooth(v, 0.0), v)
    with pytest.raises(MedinterpError, match="'sigma' parameter of smooth must be >= 0"):
        curves.smooth(v, -1.0)
    with pytest.raises(MedinterpError, match="finite values; got 1 NaN"):
        curves.smooth([1.0, float("nan")])


# -- UMAP channel: steepest window -------------------------------------------------------------------
def test_step_gives_the_window_across_the_step():
    # Step between layers 4 and 5. The smoothed rise over [l, l+2] is Σ_k w_k (f(l+2-k) − f(l-k)), which
    # is w_{l-3} + w_{l-4}: equal for l = 3 and l = 4, so the earliest, [3, 5], wins the tie.
    s = curves.smooth([0.0] * 5 + [1.0] * 5)
    assert curves.steepest_window(s) == (3, 5)


def test_ramp_centred_on_a_layer_gives_the_centred_window():
    # f = 0 … 0, 0.5 at layer 6, 1 … 1: the rise w ⊛ Δ₂f is symmetric about l = 5 → window [5, 7].
    s = curves.smooth([0.0] * 6 + [0.5] + [1.0] * 5)
    assert curves.steepest_window(s) == (5, 7)
    assert curves.steepest_window(s, window=5) == (4, 8)


def test_steepest_of_two_rises_and_no_rise():
    v = [0.0, 0.0, 0.1, 0.2, 0.2, 0.2, 0.2, 0.6, 1.0, 1.0, 1.0, 1.0]  # a small rise at 2, a big one at 7
    assert curves.steepest_window(curves.smooth(v)) == (6, 8)
    assert curves.steepest_window(curves.smooth(v[::-1])) is None  # only falls: nothing to localise
    assert curves.steepest_window(np.full(6, 0.3)) is None
    assert curves.steepest_window([0.0, 1.0]) is None  # shorter than the window


# -- saliency / ablation / patching: segments above the 75th percentile ------------------------------
def test_one_bump_gives_one_segment():
    v = np.full(13, 0.1)
    v[5:8] = [0.6, 1.0, 0.6]
    # 13 values: the 75th percentile is the 4th largest (position 9 of 12); strictly above it are the
    # three largest smoothed values, layers 5, 6, 7.
    assert curves.top_segments(curves.smooth(v)) == [(5, 7)]


def test_three_bumps_and_a_smaller_fourth_keep_the_three_largest_areas():
    v = np.zeros(60)
    for centre, height in ((7, 1.3), (22, 3.0), (37, 2.5), (52, 2.0)):
        v[centre - 1: centre + 2] = height
    s = curves.smooth(v)
    assert curves.top_segments(s, max_segments=4) == [(6, 8), (20, 24), (36, 38), (51, 53)]  # all four qualify
    assert curves.top_segments(s) == [(20, 24), (36, 38), (51, 53)]  # the smallest (and first) is cut
    assert curves.top_segments(s, max_segments=1) == [(20, 24)]


def test_a_one_layer_spike_gives_no_segment():
    v = np.zeros(20)
    v[9] = 1.0
    assert curves.top_segments(v) == []  # unsmoothed: one layer above the threshold, below min_segment
    assert curves.top_segments(v, min_segment=1) == [(9, 9)]
    assert curves.top_segments(np.full(9, 4.0)) == []  # a flat curve has nothing above its percentile


def test_percentile_ties_are_not_above():
    # 13 values, threshold = 4th largest = 0.5. Layer 4 holds 0.5 plus one rounding step: with a strict
    # float comparison it would extend the segment to [2, 4]; within tolerance it ties and stays out.
    v = np.zeros(13)
    v[1], v[2], v[3], v[4] = 0.5, 1.0, 1.0, 0.5 + 4e-16
    assert v[4] > np.percentile(v, 75)
    assert curves.top_segments(v) == [(2, 3)]
    # Exact ties at the top: all tied values are above a lower threshold.
    assert curves.top_segments([0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 1.0, 1.0, 1.0, 0.0, 0.0, 0.0]) == [(6, 8)]


def test_percentile_is_numpy_linear_interpolation():
    v = np.arange(12, dtype=float)  # 75th percentile = 8.25: layers 9, 10, 11 are above
    assert curves.top_segments(v) == [(9, 11)]
    assert curves.top_segments(v, percentile=50) == [(6, 11)]  # 5.5 → 6..11


def test_segment_parameters_are_validated():
    with pytest.raises(MedinterpError, match="'percentile' parameter of top_segments must be in \\[0, 100\\]"):
        curves.top_segments([1.0, 2.0], percentile=120)
    with pytest.raises(MedinterpError, match="must be >= 1"):
        curves.top_segments([1.0, 2.0], min_segment=0)


# -- age, union, consensus ---------------------------------------------------------------------------
def test_age_rule_unites_r2_near_max_with_top_anisotropy_runs():
    r2 = np.array([0.1, 0.5, 0.9, 0.95, 0.96, 0.94, 0.6, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5])
    aniso = np.full(13, 0.4)
    aniso[9:11] = 0.9
    r2_runs, an_runs = curves.age_layers(r2, aniso, tolerance=0.02)
    assert r2_runs == [(3, 5)]  # 0.95, 0.96, 0.94 ≥ 0.96 − 0.02; 0.9 is not
    assert an_runs == [(9, 10)]
    assert curves.union(r2_runs, an_runs) == [(3, 5), (9, 10)]
    assert curves.age_layers(r2, None, tolerance=0.1) == ([(2, 5)], [])


def test_union_merges_adjacent_and_overlapping():
    assert curves.union([(1, 2)], [(3, 4), (8, 8)], [(2, 3)]) == [(1, 4), (8, 8)]
    assert curves.union([], []) == []


def test_consensus_counts_each_method_once_per_layer():
    selections = [
        [(2, 4)],               # umap
        [(3, 5), (4, 6)],       # saliency: overlapping intervals vote once per layer
        [(9, 10)],              # ablation
        [(0, 3)],               # patching
    ]
    agreed, votes = curves.consensus(selections, min_methods=2)
    assert votes == {0: 1, 1: 1, 2: 2, 3: 3, 4: 2, 5: 1, 6: 1, 9: 1, 10: 1}
    assert agreed == [(2, 4)]
    assert curves.consensus(selections, min_methods=3)[0] == [(3, 3)]
    assert curves.consensus(selections, min_methods=1)[0] == [(0, 6), (9, 10)]
    assert curves.consensus([], 2) == ([], {})
