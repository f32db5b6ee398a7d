"""Tests for medinterp.metrics.regression: linear codes, independence, group leakage, sklearn agreement."""
import numpy as np
import pytest
from sklearn.metrics import r2_score

from medinterp.errors import MedinterpError
from medinterp.metrics import r2_with_ci, ridge_r2_cv, shuffled_r2_null
from medinterp.metrics.regression import _cv_splitter


def linear_data(n=300, d=20, noise=0.05, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, d))
    return X, X @ rng.standard_normal(d) + noise * rng.standard_normal(n)


def grouped_lookup_data(n_groups=40, per=5, d=60, seed=0):
    """Each group: `per` near-identical rows at a random location, with one random y. No linear code
    generalises to a new group, but a held-out row is trivially predicted from its twins in training."""
    rng = np.random.default_rng(seed)
    groups = np.repeat(np.arange(n_groups), per)
    X = rng.standard_normal((n_groups, d))[groups] + 0.01 * rng.standard_normal((n_groups * per, d))
    return X, rng.standard_normal(n_groups)[groups], groups


def test_linear_code_gives_r2_near_one():
    X, y = linear_data()
    r2, y_pred = ridge_r2_cv(X, y)
    assert r2 > 0.99 and y_pred.shape == y.shape


def test_independent_target_gives_r2_near_zero():
    X, _ = linear_data()
    r2, _ = ridge_r2_cv(X, np.random.default_rng(9).standard_normal(len(X)))
    assert -0.2 < r2 <= 0.05


def test_group_folds_never_split_a_group():
    groups = np.repeat(np.arange(12), 4)
    cv = _cv_splitter(len(groups), groups, 5, seed=0, fn="t")
    test_folds = []
    for train, test in cv.split(np.zeros((48, 1)), groups=groups):
        assert not set(groups[train]) & set(groups[test])
        test_folds.append(test)
    assert cv.get_n_splits() == 5 and sorted(np.concatenate(test_folds)) == list(range(48))
    assert _cv_splitter(9, np.repeat([0, 1, 2], 3), 5, seed=0, fn="t").get_n_splits() == 3  # capped


def test_groups_remove_lookup_leakage():
    X, y, groups = grouped_lookup_data()
    assert ridge_r2_cv(X, y)[0] > 0.8  # leaky: twins of each test row are in training
    assert ridge_r2_cv(X, y, groups=groups)[0] < 0.1  # honest: nothing to read out


def test_fewer_than_two_groups_is_refused():
    X, y = linear_data(n=20)
    with pytest.raises(MedinterpError, match="at least 2 distinct values in 'groups'"):
        ridge_r2_cv(X, y, groups=np.zeros(20))


def test_r2_with_ci_equals_sklearn():
    y = np.random.default_rng(1).standard_normal(200)
    y_pred = y + 0.5 * np.random.default_rng(2).standard_normal(200)
    est = r2_with_ci(y, y_pred)
    assert est.value == pytest.approx(r2_score(y, y_pred), abs=1e-12)
    assert est.ci_low < est.value < est.ci_high and est.n == 200
    perfect = r2_with_ci(y, y)
    assert (perfect.value, perfect.ci_low, perfect.ci_high) == (1.0, 1.0, 1.0)


def test_shuffled_null_is_near_zero():
    X, y = linear_data()
    null = shuffled_r2_null(X, y, n_perm=5)
    assert null.value < 0.05 and null.ci_high < 0.1 and null.n == 300


def test_grouped_null_permutes_whole_groups():
    rng = np.random.default_rng(3)
    ages = np.repeat(np.arange(30), 4)  # 4 templates per age
    X = np.outer(ages, rng.standard_normal(10)) + rng.standard_normal((120, 10))
    assert ridge_r2_cv(X, ages.astype(float), groups=ages)[0] > 0.9
    null = shuffled_r2_null(X, ages, groups=ages, n_perm=5, n_splits=5)
    assert null.value < 0.1
    with pytest.raises(MedinterpError, match="y constant within each group"):
        shuffled_r2_null(X, rng.standard_normal(120), groups=ages)


def test_mismatched_lengths_are_refused():
    with pytest.raises(MedinterpError, match="'y' parameter of ridge_r2_cv must be a 1-D array .* of length 10"):
        ridge_r2_cv(np.ones((10, 2)), np.ones(9))


@pytest.mark.parametrize("shape, grouped", [((120, 40), False), ((90, 200), True), ((60, 5), True), ((80, 30), False),
                                          ((50, 120), False)])  # n > d: primal form; n <= d: dual form
def test_closed_form_equals_the_sklearn_pipeline(shape, grouped):
    """Our closed-form ridge (primal and dual) equals scikit-learn: RidgeCV (LOO alpha) without groups; a grouped grid search with groups."""
    from sklearn.linear_model import Ridge, RidgeCV
    from sklearn.model_selection import GridSearchCV, GroupKFold, KFold
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    rng = np.random.default_rng(shape[1])
    X = rng.normal(size=shape) * rng.uniform(0.1, 10, size=shape[1])
    X[:, 0] = 3.0  # a constant feature
    y = X[:, 1:4] @ np.array([1.0, -2.0, 0.5]) + rng.normal(size=shape[0])
    groups = np.arange(shape[0]) // 3 if grouped else None
    alphas = np.logspace(-3, 3, 13)
    r2, pred = ridge_r2_cv(X, y, groups=groups, seed=4)
    outer = GroupKFold(5, shuffle=True, random_state=4) if grouped else KFold(5, shuffle=True, random_state=4)
    ref = np.empty_like(y)
    for train, test in outer.split(X, y, groups):
        if grouped:
            inner = GroupKFold(3, shuffle=True, random_state=4)
            model = GridSearchCV(make_pipeline(StandardScaler(), Ridge()), {"ridge__alpha": alphas},
                                 cv=inner, scoring="neg_mean_squared_error")
            model.fit(X[train], y[train], groups=groups[train])
        else:
            model = make_pipeline(StandardScaler(), RidgeCV(alphas=alphas)).fit(X[train], y[train])
        ref[test] = model.predict(X[test])
    np.testing.assert_allclose(pred, ref, rtol=1e-6, atol=1e-6)


def test_grouped_null_is_not_driven_far_below_zero_by_near_duplicates():
    """Rows in groups of near-twins: a permuted-target null stays near 0 (LOO alpha choice would over-fit)."""
    rng = np.random.default_rng(0)
    base = rng.normal(size=(60, 80))
    X = np.repeat(base, 6, axis=0) + 0.01 * rng.normal(size=(360, 80))
    ages = np.repeat(np.arange(60.0), 6)
    null = shuffled_r2_null(X, ages, groups=ages, n_perm=5, seed=0)
    assert -0.5 < null.value < 0.1


@pytest.mark.parametrize("grouped", [False, True])
def test_combined_fit_and_null_equal_the_separate_calls(grouped):
    from medinterp.metrics import ridge_r2_with_null

    rng = np.random.default_rng(5)
    X = rng.normal(size=(90, 30))
    y = np.repeat(np.arange(30.0), 3) if grouped else X[:, 0] + rng.normal(size=90)
    groups = y if grouped else None
    r2, pred, null = ridge_r2_with_null(X, y, groups=groups, n_perm=4, seed=2)
    r2_ref, pred_ref = ridge_r2_cv(X, y, groups=groups, seed=2)
    null_ref = shuffled_r2_null(X, y, groups=groups, n_perm=4, seed=2)
    assert r2 == pytest.approx(r2_ref, abs=1e-10)
    np.testing.assert_allclose(pred, pred_ref, atol=1e-10)
    assert (null.value, null.ci_low, null.ci_high) == pytest.approx((null_ref.value, null_ref.ci_low, null_ref.ci_high), abs=1e-10)
