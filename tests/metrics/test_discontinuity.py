"""Tests for medinterp.metrics.discontinuity: hand-computed steps, smooth ramp vs injected jump."""
import numpy as np
import pytest

from medinterp.errors import MedinterpError
from medinterp.metrics import adjacent_steps, discontinuity_score, discontinuity_with_ci, step_rank


def ramp(jump=0.0, dim=50, per=10, noise=0.05, seed=0):
    """Values 1..100 (`per` rows each) placed at v * unit direction in `dim`-D, plus noise; the step
    from 17 to 18 is 1 + `jump`, every other step is 1."""
    rng = np.random.default_rng(seed)
    v = np.repeat(np.arange(1, 101), per)
    u = rng.standard_normal(dim)
    u /= np.linalg.norm(u)
    X = np.outer(v + jump * (v >= 18), u) + noise * rng.standard_normal((len(v), dim))
    return X, v


def test_adjacent_steps_by_hand():
    X = np.array([[2.0, 0.0], [0.0, 0.0], [5.0, 4.0], [2.0, 0.0]])
    values, steps = adjacent_steps(X, [2, 1, 3, 1])  # centroids: 1 -> (1, 0), 2 -> (2, 0), 3 -> (5, 4)
    np.testing.assert_array_equal(values, [1, 2, 3])
    np.testing.assert_allclose(steps, [1.0, 5.0])


def test_score_and_rank_by_hand():
    X, values = np.array([[0.0], [1.0], [11.0], [13.0]]), [1, 2, 3, 4]  # steps 1, 10, 2
    assert discontinuity_score(X, values, at=2) == pytest.approx(10 / 1.5)  # median of the OTHER steps
    assert discontinuity_score(X, values, at=1) == pytest.approx(1 / 6)
    assert (step_rank(X, values, at=2), step_rank(X, values, at=3), step_rank(X, values, at=1)) == (1.0, 0.5, 0.0)


def test_smooth_ramp_scores_about_one():
    X, v = ramp()
    assert 0.7 <= discontinuity_score(X, v) <= 1.4
    assert step_rank(X, v) < 1.0


def test_injected_jump_is_detected():
    X, v = ramp(jump=9.0)  # step 17 -> 18 is 10x the typical step
    assert discontinuity_score(X, v) > 5
    assert step_rank(X, v) == 1.0
    assert discontinuity_score(X, v, at=40) < 1.4  # elsewhere the ramp is smooth


def test_score_ignores_row_order():
    X, v = ramp(jump=9.0)
    p = np.random.default_rng(1).permutation(len(v))
    assert discontinuity_score(X[p], v[p]) == pytest.approx(discontinuity_score(X, v))


def test_ci_brackets_the_plausible_range_and_is_seeded():
    Xs, v = ramp()
    smooth = discontinuity_with_ci(Xs, v, n_boot=100)
    assert smooth.value == pytest.approx(discontinuity_score(Xs, v)) and smooth.n == 1000
    assert 0.6 < smooth.ci_low <= smooth.value <= smooth.ci_high < 1.5
    jump = discontinuity_with_ci(*ramp(jump=9.0), n_boot=100, seed=3)
    assert jump.ci_low > 5 and jump.ci_high > jump.ci_low
    assert jump == discontinuity_with_ci(*ramp(jump=9.0), n_boot=100, seed=3)


def test_missing_value_is_refused():
    X, v = ramp()
    keep = v != 17
    with pytest.raises(MedinterpError, match="needs rows with value at=17; values present: 99 distinct"):
        discontinuity_score(X[keep], v[keep])
    with pytest.raises(MedinterpError, match="needs a value after at=100"):
        step_rank(X, v, at=100)
    with pytest.raises(MedinterpError, match="at least 3 distinct values"):
        discontinuity_with_ci(X[:20], v[:20], at=1)


def test_chunked_steps_equal_one_difference_bit_for_bit():
    from medinterp.metrics import discontinuity as disc

    C = np.random.default_rng(4).normal(size=(35, 7, 33))
    assert len(C) > disc.STEP_CHUNK and len(C) % disc.STEP_CHUNK  # several chunks, the last one partial
    reference = np.linalg.norm(np.diff(C, axis=-2), axis=-1)
    assert np.array_equal(disc._steps(C), reference)
    assert np.array_equal(disc._steps(C.reshape(-1, 5, 7, 33)), reference.reshape(-1, 5, 6))  # any leading axes
    assert np.array_equal(disc._steps(C[0]), reference[0])


def test_given_replicates_give_the_same_estimates():
    from medinterp.metrics.discontinuity import discontinuity_diff_with_ci, discontinuity_replicates

    (Xa, va), (Xb, vb) = ramp(jump=9.0), ramp()
    reps = discontinuity_replicates(Xa, va, n_boot=50, seed=2)
    assert discontinuity_with_ci(Xa, va, n_boot=50, seed=2, replicates=reps) == discontinuity_with_ci(Xa, va, n_boot=50, seed=2)
    assert (discontinuity_diff_with_ci(Xa, va, Xb, vb, n_boot=50, seed=2, replicates_a=reps)
            == discontinuity_diff_with_ci(Xa, va, Xb, vb, n_boot=50, seed=2))
    other = discontinuity_replicates(Xa, va, n_boot=50, seed=5)  # the replicates are what the CI is taken from
    assert discontinuity_with_ci(Xa, va, n_boot=50, seed=2, replicates=other) != discontinuity_with_ci(Xa, va, n_boot=50, seed=2)
