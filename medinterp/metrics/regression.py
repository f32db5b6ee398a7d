"""Cross-validated linear read-out R^2: how linearly a scalar (e.g. age) is decodable from activations.

The paper's "R^2 linearity" is not defined in the source; our default (methods.md 1.1) is the
cross-validated R^2 of a ridge regression from the embedding to the target:
R^2 = 1 - SS_res / SS_tot = 1 - sum_i (y_i - yhat_i)^2 / sum_i (y_i - mean(y))^2, computed on the pooled
out-of-fold predictions yhat (each row predicted by a model that never saw it). R^2 <= 1; 1 = perfect
linear read-out, ~0 = no better than the mean, < 0 = worse than the mean (possible out of fold).
The model is StandardScaler + RidgeCV (alpha picked by efficient leave-one-out within each training fold;
Hoerl & Kennard 1970; scikit-learn ``RidgeCV``). We solve it ourselves from one SVD per fold: the SVD
gives every alpha's fit and leave-one-out error in closed form, and it is shared by every target
column, so a permutation null costs almost nothing beyond the real fit. The result equals
``make_pipeline(StandardScaler(), RidgeCV(alphas))`` (tested to 1e-6) at a fraction of the time.
"""
from __future__ import annotations

import numpy as np
from sklearn.metrics import r2_score
from sklearn.model_selection import GroupKFold, KFold

from medinterp.errors import MedinterpError
from medinterp.metrics._validation import check_int, check_matrix, check_vector
from medinterp.metrics.bootstrap import Estimate, _boot_indices, _percentiles

_ALPHAS = np.logspace(-3, 3, 13)


def _cv_splitter(n: int, groups: np.ndarray | None, n_splits: int, seed: int, fn: str):
    """KFold (shuffled) without groups; GroupKFold with n_splits capped at the number of groups."""
    if groups is None:
        return KFold(n_splits=min(n_splits, n), shuffle=True, random_state=seed)
    n_groups = len(np.unique(groups))
    if n_groups < 2:
        raise MedinterpError(f"{fn} needs at least 2 distinct values in 'groups' to cross-validate; got {n_groups}.")
    return GroupKFold(n_splits=min(n_splits, n_groups), shuffle=True, random_state=seed)


def _check_xy(X, y, groups, fn: str):
    X = check_matrix(X, fn, min_rows=3)
    y = check_vector(y, fn, "y", n=X.shape[0])
    if groups is not None:
        groups = check_vector(groups, fn, "groups", n=X.shape[0], numeric=False)
    return X, y, groups


def _ridge_oof(X: np.ndarray, Y: np.ndarray, folds, alphas: np.ndarray) -> np.ndarray:
    """Out-of-fold predictions (n, m) of StandardScaler + RidgeCV for each target column of Y (n, m).

    Per training fold: standardise X, centre Y (the unpenalised intercept), take the thin SVD
    X = U diag(s) V^T. For a ridge penalty a, the fit is U diag(s^2/(s^2+a)) U^T y and the leverage
    h_i = sum_k U_ik^2 s_k^2/(s_k^2+a) + 1/n (the 1/n is the intercept); the leave-one-out residual is
    (y_i - yhat_i)/(1 - h_i). Each column keeps the alpha with the smallest mean squared LOO residual
    (the first on ties, as RidgeCV), and its coefficients are V diag(s/(s^2+a)) U^T y.
    """
    pred = np.empty_like(Y)
    for train, test in folds:
        mu, sd = X[train].mean(0), X[train].std(0)
        sd[sd == 0] = 1.0  # constant features: StandardScaler leaves them unscaled
        Xt = (X[train] - mu) / sd
        y_mean = Y[train].mean(0)
        Yc = Y[train] - y_mean  # (n_tr, m)
        U, s, Vt = np.linalg.svd(Xt, full_matrices=False)
        UtY = U.T @ Yc  # (r, m)
        U2 = U**2
        s2 = s**2
        best_err = np.full(Y.shape[1], np.inf)
        best_alpha = np.zeros(Y.shape[1])
        for a in alphas:
            shrink = s2 / (s2 + a)  # (r,) how much of each component the fit keeps
            fitted = U @ (shrink[:, None] * UtY)
            leverage = U2 @ shrink + 1.0 / len(train)
            err = (((Yc - fitted) / (1.0 - leverage)[:, None]) ** 2).mean(0)
            better = err < best_err
            best_err[better], best_alpha[better] = err[better], a
        coef = Vt.T @ (s[:, None] / (s2[:, None] + best_alpha[None, :]) * UtY)  # (d, m)
        pred[test] = ((X[test] - mu) / sd) @ coef + y_mean
    return pred


def ridge_r2_cv(X, y, groups=None, n_splits: int = 5, alphas=_ALPHAS, seed: int = 0) -> tuple[float, np.ndarray]:
    """Cross-validated R^2 of StandardScaler + RidgeCV(alphas) from X to y.

    X: (n, d); y: (n,); groups: optional (n,) group ids. Returns (R^2 of the pooled out-of-fold
    predictions, those predictions (n,)). Without groups the folds are a shuffled KFold(seed).

    With ``groups``, folds are GroupKFold, so all rows of a group are in the same fold. This prevents
    leakage: if one age is seen through several templates or genders, near-identical rows of that age
    would sit in train and test and the model could look up the answer instead of reading out a linear
    code, inflating R^2. n_splits is reduced to the number of groups when fewer; < 2 groups is an error.
    (The inner alpha search in RidgeCV is leave-one-out over rows, so it does not respect groups; it only
    picks alpha and never sees the test fold.)
    """
    fn = "ridge_r2_cv"
    X, y, groups = _check_xy(X, y, groups, fn)
    n_splits = check_int(n_splits, "n_splits", fn, 2)
    folds = list(_cv_splitter(X.shape[0], groups, n_splits, seed, fn).split(X, y, groups))
    y_pred = _ridge_oof(X.astype(np.float64), y[:, None], folds, np.asarray(alphas, dtype=np.float64))[:, 0]
    return float(r2_score(y, y_pred)), y_pred


def r2_with_ci(y, y_pred, n_boot: int = 200, seed: int = 0) -> Estimate:
    """R^2 = 1 - SS_res/SS_tot of predictions ``y_pred`` for ``y`` (both (n,), n >= 2) with a 95% CI.

    value = ``sklearn.metrics.r2_score(y, y_pred)``. The CI is the percentile bootstrap over (y_i, yhat_i)
    pairs, vectorized; a resample with constant y follows r2_score's convention (1 if perfect, else 0).
    """
    fn = "r2_with_ci"
    y = check_vector(y, fn, "y")
    y_pred = check_vector(y_pred, fn, "y_pred", n=y.shape[0])
    if y.shape[0] < 2:
        raise MedinterpError(f"The 'y' parameter of {fn} must have at least 2 values. Got {y.shape[0]} instead.")
    n_boot = check_int(n_boot, "n_boot", fn, 1)
    idx = _boot_indices(y.shape[0], n_boot, seed)  # (n_boot, n), the same draws as bootstrap_ci
    yb, pb = y[idx], y_pred[idx]
    ss_res = ((yb - pb) ** 2).sum(axis=1)
    ss_tot = ((yb - yb.mean(axis=1, keepdims=True)) ** 2).sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        r2 = np.where(ss_tot > 0, 1.0 - ss_res / ss_tot, np.where(ss_res == 0, 1.0, 0.0))
    lo, hi = _percentiles(r2, 0.05)
    return Estimate(float(r2_score(y, y_pred)), lo, hi, int(y.shape[0]))


def shuffled_r2_null(X, y, groups=None, n_perm: int = 5, seed: int = 0, **ridge_kw) -> Estimate:
    """Chance level of :func:`ridge_r2_cv`: its R^2 with y permuted, same folds and settings.

    Without groups, y is permuted across rows. With ``groups``, y must be constant within each group
    (e.g. groups = age) and the per-group values are permuted across groups, so the null keeps the
    group structure that the real fit sees. value = mean R^2 over ``n_perm`` permutations; CI = the
    2.5th and 97.5th percentiles of the permutation distribution; n = number of rows. ``ridge_kw``
    (n_splits, alphas) go to :func:`ridge_r2_cv`, which gets the same ``seed`` for its folds.
    """
    fn = "shuffled_r2_null"
    X, y, groups = _check_xy(X, y, groups, fn)
    n_perm = check_int(n_perm, "n_perm", fn, 1)
    rng = np.random.default_rng(seed)
    if groups is not None:
        uniq, inv = np.unique(groups, return_inverse=True)
        first = np.array([np.flatnonzero(inv == g)[0] for g in range(len(uniq))])
        if np.any(y != y[first][inv]):
            raise MedinterpError(f"{fn} with 'groups' needs y constant within each group "
                                 "(it permutes one y value per group).")
        group_y = y[first]
    Y = np.stack([rng.permutation(y) if groups is None else rng.permutation(group_y)[inv] for _ in range(n_perm)], 1)
    n_splits = check_int(ridge_kw.get("n_splits", 5), "n_splits", fn, 2)
    folds = list(_cv_splitter(X.shape[0], groups, n_splits, seed, fn).split(X, y, groups))
    pred = _ridge_oof(X.astype(np.float64), Y, folds, np.asarray(ridge_kw.get("alphas", _ALPHAS), dtype=np.float64))
    scores = [r2_score(Y[:, j], pred[:, j]) for j in range(n_perm)]  # all permutations share the folds' SVDs
    lo, hi = np.percentile(scores, [2.5, 97.5])
    return Estimate(float(np.mean(scores)), float(lo), float(hi), int(X.shape[0]))
