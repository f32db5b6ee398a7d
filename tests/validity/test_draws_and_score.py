"""Depth-matched random draws, baselines, and the validity score against hand computations."""
from __future__ import annotations

import math

import numpy as np
import pytest

from medinterp.errors import MedinterpError
from medinterp.validity.draws import baselines, depth_bands, random_draws
from medinterp.validity.score import validity


def test_depth_bands_cut_the_blocks_into_equal_relative_depth():
    assert depth_bands(6, 3).tolist() == [0, 0, 1, 1, 2, 2]
    assert depth_bands(18, 3).tolist() == [0] * 6 + [1] * 6 + [2] * 6
    assert depth_bands(4, 3).tolist() == [0, 0, 1, 2]  # floor(b * 3 / 4)


def test_draws_take_as_many_blocks_per_band_as_the_selection_and_avoid_it():
    bands = depth_bands(18, 3)
    selected = (1, 2, 7)  # two early, one middle
    draws = random_draws(selected, 18, 20, seed=0)
    assert len(draws.sets) == 20 and draws.distinct == 20 and draws.note == ""
    for s in draws.sets:
        assert len(s) == 3 and not set(s) & set(selected)
        assert sorted(bands[list(s)].tolist()) == [0, 0, 1]
    assert random_draws(selected, 18, 20, seed=0) == draws  # deterministic
    assert random_draws(selected, 18, 20, seed=1) != draws


def test_draws_say_when_the_bands_are_too_small_or_too_few_sets_exist():
    # 6 blocks, bands of 2: selecting both blocks of band 0 leaves no unselected block there
    draws = random_draws((0, 1), 6, 5, seed=0)
    assert "depth bands [0]" in draws.note
    # band 0 has 2 blocks and 2 are needed: the only set is (0, 1) itself
    assert set(draws.sets) == {(0, 1)} and draws.distinct == 1 and "only 1 distinct" in draws.note
    # one block of band 1 (blocks 2, 3) selected: the single other block is the only draw
    draws = random_draws((2,), 6, 4, seed=0)
    assert set(draws.sets) == {(3,)} and "only 1 distinct" in draws.note


def test_baselines_and_bad_selections():
    assert baselines((3, 9), 12) == {"first_n": (0, 1), "last_n": (10, 11), "complement": (0, 1, 2, 4, 5, 6, 7, 8, 10, 11)}
    with pytest.raises(MedinterpError, match=r"selected layers \[12\] out of range .* valid: 0..11"):
        baselines((3, 12), 12)
    with pytest.raises(MedinterpError, match="non-empty list"):
        random_draws((), 12, 3, seed=0)
    with pytest.raises(MedinterpError, match="cover all 4 blocks"):
        random_draws((0, 1, 2, 3), 4, 3, seed=0)


def test_validity_is_the_z_score_against_the_draws():
    r = [0.1, 0.2, 0.3, 0.4]
    v = validity(0.6, r, n_boot=500, seed=0)
    sd = np.std(r, ddof=1)  # 0.1291
    assert v.score == pytest.approx((0.6 - 0.25) / sd)
    assert v.random_mean == pytest.approx(0.25) and v.random_sd == pytest.approx(sd)
    assert v.beats == 1.0 and v.n_draws == 4 and v.n_broken == 0
    assert v.ci_low < v.score < v.ci_high
    assert validity(0.25, r).score == pytest.approx(0.0)
    assert validity(0.2, r).beats == pytest.approx((1 + 0.5) / 4)  # beats 0.1, ties 0.2


def test_broken_interventions_are_reported_not_averaged():
    v = validity(0.6, [0.1, float("nan"), 0.3, 0.2])
    assert v.n_broken == 1 and v.n_draws == 3 and "1 random draws broke" in v.note
    assert v.score == pytest.approx((0.6 - 0.2) / 0.1)
    broken = validity(float("nan"), [0.1, 0.2])
    assert math.isnan(broken.score) and "map's layers broke the model" in broken.note
    flat = validity(0.5, [0.2, 0.2, 0.2])
    assert math.isnan(flat.score) and "sd 0" in flat.note and flat.beats == 1.0
