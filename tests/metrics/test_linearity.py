"""medinterp.metrics.linearity against methods.md 5's sanity values and scikit-learn's LinearRegression."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.linear_model import LinearRegression
from sklearn.metrics import r2_score

from medinterp.errors import MedinterpError
from medinterp.metrics.bootstrap import _boot_indices
from medinterp.metrics.linearity import TRIVIAL, group_folds, linearity_scores


def gaussian(n: int = 2000, d: int = 64, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.random.Generator]:
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, d)), np.repeat(np.arange(n // 10), 10), rng


def values(scores) -> dict[str, float]:
    return {k: s.estimate.value for k, s in scores.items()}


@pytest.mark.parametrize("step", ["XR", "XA", "3X+5"])
def test_linear_steps_score_one(step):
    X, groups, rng = gaussian()
    Y = {"XR": X @ np.linalg.qr(rng.normal(size=(64, 64)))[0], "XA": X @ rng.normal(size=(64, 64)),
         "3X+5": 3 * X + 5}[step]
    got = linearity_scores(X, Y, groups)
    for key in ("linearity", "linearity_heldout", "linearity_residual"):
        assert got[key].estimate.value == pytest.approx(1.0, abs=1e-9), key
        assert got[key].note == ""
    assert got["nonlinearity"].estimate.value == pytest.approx(0.0, abs=1e-6)


def test_unrelated_and_curved_steps_match_the_sanity_values():
    X, groups, rng = gaussian()
    unrelated = values(linearity_scores(X, rng.normal(size=X.shape), groups))
    assert unrelated["linearity"] == pytest.approx(64 / 2000, abs=0.004)  # ~ d/n: the in-sample inflation
    assert unrelated["linearity_heldout"] < 0  # nothing carries over to held-out prompts
    assert unrelated["nonlinearity"] == pytest.approx(1.0, abs=0.05)
    curved = values(linearity_scores(X, np.tanh(2 * X), groups))
    assert curved["linearity"] == pytest.approx(0.84, abs=0.01)
    assert 0.8 < curved["linearity_heldout"] < curved["linearity"]


def test_residual_variant_on_x_plus_noise():
    X, groups, rng = gaussian()
    got = values(linearity_scores(X, X + 0.1 * rng.normal(size=X.shape), groups))
    assert got["linearity"] == pytest.approx(1 / 1.01, abs=0.002)  # R^2 = var(X) / (var(X) + 0.01)
    assert got["linearity_residual"] == pytest.approx(64 / 2000, abs=0.004)  # the update Y - X is pure noise


def test_fewer_rows_than_dimensions_in_sample_nan_held_out_defined():
    for n in (64, 50):  # n = d and n < d (methods.md 5: n = 50, d = 64 would give 1.000)
        X, _, rng = gaussian(n=n)
        got = linearity_scores(X, rng.normal(size=X.shape), np.arange(n))
        for key in ("linearity", "linearity_residual"):
            assert np.isnan(got[key].estimate.value) and got[key].note == TRIVIAL
    assert TRIVIAL == "n_rows <= d: in-sample fit is trivially 1"
    assert np.isfinite(got["linearity_heldout"].estimate.value) and got["linearity_heldout"].estimate.value < 0.2
    assert "interpolant" in got["linearity_heldout"].note
    # Between d and 5 d rows the value stays, with a warning note.
    X, groups, rng = gaussian(n=200)
    got = linearity_scores(X, rng.normal(size=X.shape), groups)
    assert got["linearity"].estimate.value == pytest.approx(64 / 200, abs=0.06) and "inflated" in got["linearity"].note


def curved_data(seed: int = 3):
    rng = np.random.default_rng(seed)
    sizes = rng.integers(1, 12, size=60)  # prompts of unequal length
    groups = np.repeat(rng.permutation(1000)[:60], sizes)  # arbitrary, unsorted prompt ids
    X = rng.normal(size=(len(groups), 12)) * np.linspace(0.5, 3, 12) + 4
    Y = np.tanh(X @ rng.normal(size=(12, 9)) / 6) + 0.2 * rng.normal(size=(len(groups), 9)) - 1
    return X, Y, groups


def test_in_sample_equals_scikit_learn_variance_weighted_r2():
    X, Y, groups = curved_data()
    got = linearity_scores(X, Y, groups)
    want = r2_score(Y, LinearRegression().fit(X, Y).predict(X), multioutput="variance_weighted")
    assert got["linearity"].estimate.value == pytest.approx(want, abs=1e-10)
    Yr = Y + X[:, :9]  # as wide as X[:, :9], for the residual variant
    got = linearity_scores(X[:, :9], Yr, groups)
    want = r2_score(Yr - X[:, :9], LinearRegression().fit(X[:, :9], Yr - X[:, :9]).predict(X[:, :9]),
                    multioutput="variance_weighted")
    assert got["linearity_residual"].estimate.value == pytest.approx(want, abs=1e-10)


def test_held_out_equals_scikit_learn_on_the_same_grouped_folds():
    X, Y, groups = curved_data()
    got = linearity_scores(X, Y, groups, n_folds=4, seed=7)
    dense = torch.as_tensor(np.unique(groups, return_inverse=True)[1])
    folds = group_folds(dense, 4, 7).numpy()
    assert sorted(np.unique(folds)) == [0, 1, 2, 3]
    for f in range(4):  # every prompt lies in one fold
        assert not set(groups[folds == f]) & set(groups[folds != f])
    sse = sst = 0.0
    errors = np.empty(len(X))
    for f in range(4):
        train, test = folds != f, folds == f
        pred = LinearRegression().fit(X[train], Y[train]).predict(X[test])
        sse += ((pred - Y[test]) ** 2).sum()
        sst += ((Y[test] - Y[test].mean(0)) ** 2).sum()
        one_fold = 1 - ((pred - Y[test]) ** 2).sum() / ((Y[test] - Y[test].mean(0)) ** 2).sum()
        assert one_fold == pytest.approx(r2_score(Y[test], pred, multioutput="variance_weighted"), abs=1e-12)
        rms = np.sqrt(((Y[train] - Y[train].mean(0)) ** 2).sum(1).mean())
        errors[test] = np.linalg.norm(pred - Y[test], axis=1) / rms
    assert got["linearity_heldout"].estimate.value == pytest.approx(1 - sse / sst, abs=1e-10)
    assert got["nonlinearity"].estimate.value == pytest.approx(errors.mean(), abs=1e-10)
    assert got["linearity_heldout"].estimate.value < got["linearity"].estimate.value


def test_interval_resamples_prompts_with_the_map_fixed():
    X, Y, groups = curved_data()
    got = linearity_scores(X, Y, groups, n_boot=50, seed=11)["linearity"].estimate
    res = ((LinearRegression().fit(X, Y).predict(X) - Y) ** 2).sum(1)
    tot = ((Y - Y.mean(0)) ** 2).sum(1)
    ids = np.unique(groups, return_inverse=True)[1]
    per_sse, per_sst = np.bincount(ids, res), np.bincount(ids, tot)
    idx = _boot_indices(len(per_sse), 50, 11)  # the same resamples of the 60 prompts
    reps = 1 - per_sse[idx].sum(1) / per_sst[idx].sum(1)
    assert (got.ci_low, got.ci_high) == pytest.approx(tuple(np.percentile(reps, [2.5, 97.5])), abs=1e-10)
    assert got.ci_low < got.value < got.ci_high and got.n == len(X)


def test_one_prompt_and_bad_input():
    X, _, rng = gaussian(n=300, d=4)
    got = linearity_scores(X, X @ rng.normal(size=(4, 4)), np.zeros(300, dtype=int))
    assert got["linearity"].estimate.value == pytest.approx(1.0) and np.isnan(got["linearity"].estimate.ci_low)
    assert np.isnan(got["linearity_heldout"].estimate.value) and "one prompt" in got["linearity_heldout"].note
    got = linearity_scores(X, rng.normal(size=(300, 3)), np.arange(300) // 3)
    assert np.isnan(got["linearity_residual"].estimate.value) and "Y has 3 columns" in got["linearity_residual"].note
    with pytest.raises(MedinterpError, match="one row per row of X"):
        linearity_scores(X, X[:-1], np.arange(300))
    with pytest.raises(MedinterpError, match="'groups' parameter of linearity_scores must be a 1-D integer"):
        linearity_scores(X, X, np.linspace(0, 1, 300))
    with pytest.raises(MedinterpError, match="'n_folds' parameter of linearity_scores must be an int >= 2"):
        linearity_scores(X, X, np.arange(300), n_folds=1)
    with pytest.raises(MedinterpError, match="1 non-finite values"):
        linearity_scores(np.where(np.arange(1200).reshape(300, 4) == 5, np.nan, X), X, np.arange(300))


def test_rcond_cuts_singular_values_below_rcond_times_the_largest():
    rng = np.random.default_rng(4)
    X, z = rng.normal(size=(500, 5)), rng.normal(size=500)
    Y = np.c_[z, X[:, 0]]  # half of Y's variance is z
    groups = np.arange(500) // 5
    for scale, rcond, want in [(1e-3, 1e-5, 1.0), (1e-7, 1e-5, 0.5), (1e-7, 1e-9, 1.0)]:
        X[:, 4] = scale * z  # a direction of singular value ~scale * sigma_max that carries z
        got = linearity_scores(X, Y, groups, rcond=rcond)["linearity"].estimate.value
        assert got == pytest.approx(want, abs=0.05), (scale, rcond)
