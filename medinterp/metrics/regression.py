"""Cross-validated linear read-out R^2: how linearly a scalar (e.g. age) is decodable from activations.

The paper's "R^2 linearity" is not defined in the source; our default (methods.md 1.1) is the
cross-validated R^2 of a ridge regression from the embedding to the target:
R^2 = 1 - SS_res / SS_tot = 1 - sum_i (y_i - yhat_i)^2 / sum_i (y_i - mean(y))^2, computed on the pooled
out-of-fold predictions yhat (each row predicted by a model that never saw it). R^2 <= 1; 1 = perfect
linear read-out, ~0 = no better than the mean, < 0 = worse than the mean (possible out of fold).
The model is StandardScaler + RidgeCV (alpha picked by efficient leave-one-out within each training fold;
Hoerl & Kennard 1970; scikit-learn ``RidgeCV``). We solve it ourselves from one eigendecomposition of
the smaller Gram matrix per fold (``_RidgePath``): it gives every alpha's fit and leave-one-out error
in closed form, and it is shared by every target
column, so a permutation null costs almost nothing beyond the real fit. Without groups the result equals
``make_pipeline(StandardScaler(), RidgeCV(alphas))``; with groups, a grid search over alphas with
GroupKFold(3) inner folds (both tested to 1e-6 against scikit-learn) at a fraction of the time.
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


def _standardise(X: np.ndarray, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean and scale of ``X[rows]`` as StandardScaler computes them (constant features keep scale 1)."""
    mu, sd = X[rows].mean(0), X[rows].std(0)
    sd[sd == 0] = 1.0
    return mu, sd


class _RidgePath:
    """Ridge fits of a standardised training block ``Xt`` (n, d) to centred targets ``Yc`` (n, m), for any alpha.

    With Xt = U S Vᵀ (thin SVD), everything ridge needs is a function of e = s², of the scores Q = U S and
    of a feature-space basis: coefficients β(α) = B diag(1/(e+α)) C, fitted values Q diag(1/(e+α)) QᵀYc
    and leverages h_i = Σ_k Q_ik² / (e_k + α). One symmetric eigendecomposition of the smaller Gram
    matrix gives them without the SVD (3–6× faster at 800 × 640) and without dividing by s:

    - n > d (primal): XtᵀXt = V diag(e) Vᵀ, Q = Xt V, B = V, C = QᵀYc;
    - n <= d (dual): XtXtᵀ = U diag(e) Uᵀ, Q = U diag(√e), B = XtᵀU, C = UᵀYc.

    Directions with e ≈ 0 contribute nothing in either form (Xtᵀu_k has norm √e_k); tiny negative
    eigenvalues from round-off are clipped to 0.
    """

    def __init__(self, Xt: np.ndarray, Yc: np.ndarray) -> None:
        n, d = Xt.shape
        if n > d:
            e, V = np.linalg.eigh(Xt.T @ Xt)
            self.Q = Xt @ V
            self.B, self.C = V, self.Q.T @ Yc
        else:
            e, U = np.linalg.eigh(Xt @ Xt.T)
            e = np.clip(e, 0.0, None)
            self.Q = U * np.sqrt(e)
            self.B, self.C = Xt.T @ U, U.T @ Yc
        self.e = np.clip(e, 0.0, None)
        self.QtY = self.Q.T @ Yc  # (r, m)

    def coef(self, alpha) -> np.ndarray:
        """Ridge coefficients (d, m), one alpha per target column (or one for all)."""
        alpha = np.broadcast_to(np.asarray(alpha, dtype=np.float64), (self.C.shape[1],))
        return self.B @ (self.C / (self.e[:, None] + alpha[None, :]))

    def loo_alpha(self, Yc: np.ndarray, alphas) -> np.ndarray:
        """Per target column, the alpha with the smallest mean squared leave-one-out residual (RidgeCV's rule).

        Fitted values Q diag(1/(e+a)) QᵀYc; leverage h_i = Σ_k Q_ik²/(e_k+a) + 1/n (the 1/n is the
        unpenalised intercept); LOO residual (y_i - yhat_i)/(1 - h_i). Ties keep the first alpha.
        """
        best_err, best = np.full(Yc.shape[1], np.inf), np.zeros(Yc.shape[1])
        Q2 = self.Q**2
        for a in alphas:
            inv = 1.0 / (self.e + a)
            err = (((Yc - self.Q @ (inv[:, None] * self.QtY)) / (1.0 - Q2 @ inv - 1.0 / len(Yc))[:, None]) ** 2).mean(0)
            better = err < best_err
            best_err[better], best[better] = err[better], a
        return best


def _grouped_alpha(X, Y, rows, groups, alphas, n_inner: int, seed: int) -> np.ndarray:
    """Per target column, the alpha with the smallest mean inner-fold MSE under GroupKFold(n_inner).

    Used when rows come in groups of near-duplicates (one age under several templates): leave-one-out
    would see a row's twins in its own training set and pick too small a penalty, which over-fits —
    most visibly in the permutation null, whose R^2 then falls far below 0.
    """
    inner = GroupKFold(n_splits=min(n_inner, len(np.unique(groups[rows]))), shuffle=True, random_state=seed)
    errs = np.zeros((len(alphas), Y.shape[1]))
    for tr, te in inner.split(rows, groups=groups[rows]):
        tr, te = rows[tr], rows[te]
        mu, sd = _standardise(X, tr)
        y_mean = Y[tr].mean(0)
        path = _RidgePath((X[tr] - mu) / sd, Y[tr] - y_mean)
        Xte = (X[te] - mu) / sd
        for i, a in enumerate(alphas):
            errs[i] += ((Xte @ path.coef(a) + y_mean - Y[te]) ** 2).mean(0)
    return np.asarray(alphas)[np.argmin(errs, axis=0)]  # argmin keeps the first on ties


def _ridge_oof(X: np.ndarray, Y: np.ndarray, folds, alphas: np.ndarray, groups: np.ndarray | None = None,
               seed: int = 0, n_inner: int = 3) -> np.ndarray:
    """Out-of-fold predictions (n, m) of StandardScaler + ridge for each target column of Y (n, m).

    Per outer training fold: standardise X, centre Y (the intercept), pick alpha per column — by
    closed-form leave-one-out without groups (exactly RidgeCV), by grouped inner CV with groups — and
    predict the test fold. One eigendecomposition per (inner) fold serves every alpha and every column.
    """
    pred = np.empty_like(Y)
    for train, test in folds:
        mu, sd = _standardise(X, train)
        y_mean = Y[train].mean(0)
        Yc = Y[train] - y_mean
        path = _RidgePath((X[train] - mu) / sd, Yc)
        alpha = (path.loo_alpha(Yc, alphas) if groups is None
                 else _grouped_alpha(X, Y, np.asarray(train), groups, alphas, n_inner, seed))
        pred[test] = ((X[test] - mu) / sd) @ path.coef(alpha) + y_mean
    return pred


def ridge_r2_cv(X, y, groups=None, n_splits: int = 5, alphas=_ALPHAS, seed: int = 0) -> tuple[float, np.ndarray]:
    """Cross-validated R^2 of StandardScaler + RidgeCV(alphas) from X to y.

    X: (n, d); y: (n,); groups: optional (n,) group ids. Returns (R^2 of the pooled out-of-fold
    predictions, those predictions (n,)). Without groups the folds are a shuffled KFold(seed).

    With ``groups``, folds are GroupKFold, so all rows of a group are in the same fold. This prevents
    leakage: if one age is seen through several templates or genders, near-identical rows of that age
    would sit in train and test and the model could look up the answer instead of reading out a linear
    code, inflating R^2. n_splits is reduced to the number of groups when fewer; < 2 groups is an error.
    The penalty is then chosen by a grouped inner CV (GroupKFold(3) within each training fold) rather
    than RidgeCV's leave-one-out, for the same reason. Without groups it is exactly RidgeCV.
    """
    fn = "ridge_r2_cv"
    X, y, groups = _check_xy(X, y, groups, fn)
    n_splits = check_int(n_splits, "n_splits", fn, 2)
    folds = list(_cv_splitter(X.shape[0], groups, n_splits, seed, fn).split(X, y, groups))
    y_pred = _ridge_oof(X.astype(np.float64), y[:, None], folds, np.asarray(alphas, dtype=np.float64), groups, seed)[:, 0]
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


def _permuted_targets(y: np.ndarray, groups: np.ndarray | None, n_perm: int, seed: int, fn: str) -> np.ndarray:
    """(n, n_perm) permutations of y: across rows, or one value per group across groups (keeping groups)."""
    rng = np.random.default_rng(seed)
    if groups is None:
        return np.stack([rng.permutation(y) for _ in range(n_perm)], 1)
    uniq, inv = np.unique(groups, return_inverse=True)
    first = np.array([np.flatnonzero(inv == g)[0] for g in range(len(uniq))])
    if np.any(y != y[first][inv]):
        raise MedinterpError(f"{fn} with 'groups' needs y constant within each group "
                             "(it permutes one y value per group).")
    return np.stack([rng.permutation(y[first])[inv] for _ in range(n_perm)], 1)


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
    Y = _permuted_targets(y, groups, n_perm, seed, fn)
    n_splits = check_int(ridge_kw.get("n_splits", 5), "n_splits", fn, 2)
    folds = list(_cv_splitter(X.shape[0], groups, n_splits, seed, fn).split(X, y, groups))
    pred = _ridge_oof(X.astype(np.float64), Y, folds, np.asarray(ridge_kw.get("alphas", _ALPHAS), dtype=np.float64),
                      groups, seed)
    scores = [r2_score(Y[:, j], pred[:, j]) for j in range(n_perm)]  # all permutations share the folds' eigendecompositions
    lo, hi = np.percentile(scores, [2.5, 97.5])
    return Estimate(float(np.mean(scores)), float(lo), float(hi), int(X.shape[0]))


def ridge_r2_with_null(X, y, groups=None, n_perm: int = 5, n_splits: int = 5, alphas=_ALPHAS,
                       seed: int = 0) -> tuple[float, np.ndarray, Estimate]:
    """:func:`ridge_r2_cv` and :func:`shuffled_r2_null` in one pass: the real and permuted targets share
    every eigendecomposition (same folds, same seed), so the null costs almost nothing extra. Returns (R^2, out-of-fold
    predictions, null Estimate); identical to calling the two functions separately.
    """
    fn = "ridge_r2_with_null"
    X, y, groups = _check_xy(X, y, groups, fn)
    n_perm = check_int(n_perm, "n_perm", fn, 1)
    n_splits = check_int(n_splits, "n_splits", fn, 2)
    Y = np.column_stack([y, _permuted_targets(y, groups, n_perm, seed, fn)])
    folds = list(_cv_splitter(X.shape[0], groups, n_splits, seed, fn).split(X, y, groups))
    pred = _ridge_oof(X.astype(np.float64), Y, folds, np.asarray(alphas, dtype=np.float64), groups, seed)
    scores = [r2_score(Y[:, j], pred[:, j]) for j in range(1, n_perm + 1)]
    lo, hi = np.percentile(scores, [2.5, 97.5])
    null = Estimate(float(np.mean(scores)), float(lo), float(hi), int(X.shape[0]))
    return float(r2_score(y, pred[:, 0])), pred[:, 0], null
