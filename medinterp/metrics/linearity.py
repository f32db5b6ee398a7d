"""Layer-to-layer linearity: how well one least-squares linear map carries read-out l to read-out l + 1.

Razzhigaev et al., "Your Transformer is Secretly Linear" (ACL 2024; LLM-Microscope's "Procrustes
similarity", which is least squares, not orthogonal Procrustes): centre X and Y (n, d), divide each by its
Frobenius norm, fit A = pinv(X) Y and score 1 - ||XA - Y||_F^2, which equals the multivariate
(variance-weighted) R^2 = 1 - SSE / SST, in [0, 1]. Four scores (docs/geometry.md):

- ``linearity``: that in-sample score. With n <= d rows the map interpolates and the score is trivially 1
  (methods.md pitfall 1): NaN with the note "n_rows <= d: in-sample fit is trivially 1". Between d and 5 d
  rows it is inflated (unrelated Gaussians give about d / n): a note says so, the value stays.
- ``linearity_heldout``: the map fitted on the training prompts of each of ``n_folds`` grouped folds (whole
  prompts, seeded) and applied to the held-out prompts; the test rows are centred with the TRAINING means
  (an intercept fitted on the training rows), SSE and SST are pooled over the folds: 1 - sum SSE / sum SST,
  SST about each fold's own test mean (scikit-learn's out-of-sample ``r2_score(..., "variance_weighted")``
  convention, so it can be < 0). Defined for any n (the honest version, arXiv 2606.19379).
- ``linearity_residual``: the in-sample score with Y replaced by Y - X (the residual stream's own update);
  NaN for n <= d like ``linearity``. X spans itself, so the residuals are those of ``linearity`` and only
  SST changes (up to X's variance in the directions cut by ``rcond``, below rcond^2 of its largest).
- ``nonlinearity``: the token-level error ||x A* - y|| of each held-out token under its fold's map, averaged
  over all rows (every row is held out exactly once), in units where the training rows of X and Y, centred,
  have root-mean-square norm 1 (the Frobenius normalisation times sqrt(n_train), so that the value does not
  shrink with n; 0 for a linear step, about 1 when the map predicts nothing, sqrt(1 - R^2) on average).

Solving: the float64 Gram matrix X^T X (d x d) is eigendecomposed and inverted on the eigenvalues above
``rcond^2 * lambda_max``, i.e. the pseudo-inverse with singular values below ``rcond * sigma_max`` cut
(default 1e-5: the float64 Gram resolves eigenvalues down to ~1e-13 lambda_max, so the kept ones are
accurate). Costs about 4 n d^2 flops (per-fold Gram and cross matrices, summed for the full fit, and the
predictions) plus n_folds + 1 eigendecompositions of d x d; no loop over rows.

Confidence intervals resample prompts (``groups``) with the fitted maps, means and fold assignment held
fixed: per-prompt sums of SSE and SST (and of the token errors and counts) are resampled and the ratio
recomputed, so a replicate costs O(n_prompts) instead of a refit (too slow at d = 4096); the interval
therefore covers the sampling of prompts, not the variability of the fitted map.
"""
from __future__ import annotations

import numpy as np
import torch

from medinterp.errors import MedinterpError
from medinterp.metrics._validation import check_groups, check_int, check_tensor
from medinterp.metrics.bootstrap import Estimate, Scored, boot_index_tensor, nan_scored, scored_from_replicates

__all__ = ["Scored", "linearity_scores", "group_folds"]

KEYS = ("linearity", "linearity_heldout", "linearity_residual", "nonlinearity")
TRIVIAL = "n_rows <= d: in-sample fit is trivially 1"


def group_folds(groups: torch.Tensor, n_folds: int, seed: int) -> torch.Tensor:
    """(n,) fold id of each row: the dense group ids 0..G-1 are shuffled by ``np.random.default_rng(seed)``
    and dealt round-robin to min(n_folds, G) folds, so every fold holds whole groups and the fold sizes
    differ by at most one group."""
    n_groups = int(groups.max()) + 1
    order = np.random.default_rng(seed).permutation(n_groups)
    fold_of_group = np.empty(n_groups, dtype=np.int64)
    fold_of_group[order] = np.arange(n_groups) % min(n_folds, n_groups)
    return torch.from_numpy(fold_of_group).to(groups.device)[groups]


def _pinv_solve(G: torch.Tensor, C: torch.Tensor, rcond: float) -> torch.Tensor:
    """Least-squares map A = pinv(G) C (d, e) from the Gram G = X^T X (d, d) and the cross matrix
    C = X^T Y (d, e), cutting eigenvalues of G at or below rcond^2 * lambda_max."""
    lam, V = torch.linalg.eigh(G)  # ascending
    keep = lam > rcond**2 * lam[-1].clamp_min(torch.finfo(G.dtype).tiny)
    Vk = V[:, keep]
    return Vk @ ((Vk.T @ C) / lam[keep][:, None])


def _ratio_score(sse: torch.Tensor, sst: torch.Tensor, groups: torch.Tensor, n_groups: int,
                 boot: torch.Tensor | None, note: str) -> Scored:
    """1 - sum(sse) / sum(sst) over rows, with the prompt-bootstrap interval of the same ratio."""
    per_sse = torch.zeros(n_groups, dtype=sse.dtype, device=sse.device).index_add_(0, groups, sse)
    per_sst = torch.zeros(n_groups, dtype=sst.dtype, device=sst.device).index_add_(0, groups, sst)
    value = 1.0 - float(per_sse.sum() / per_sst.sum())
    if boot is None:
        return Scored(Estimate(value, np.nan, np.nan, len(sse)), note)
    reps = 1.0 - per_sse[boot].sum(1) / per_sst[boot].sum(1)  # (n_boot,)
    return scored_from_replicates(value, reps, len(sse), note)


def _mean_score(values: torch.Tensor, groups: torch.Tensor, n_groups: int, boot: torch.Tensor | None,
                note: str) -> Scored:
    """Mean of per-row ``values``, with the prompt-bootstrap interval of sum(values) / rows."""
    per_sum = torch.zeros(n_groups, dtype=values.dtype, device=values.device).index_add_(0, groups, values)
    per_n = torch.bincount(groups, minlength=n_groups).to(values.dtype)
    value = float(values.mean())
    if boot is None:
        return Scored(Estimate(value, np.nan, np.nan, len(values)), note)
    return scored_from_replicates(value, per_sum[boot].sum(1) / per_n[boot].sum(1), len(values), note)


def linearity_scores(X, Y, groups, *, n_folds: int = 5, n_boot: int = 200, seed: int = 0,
                     rcond: float = 1e-5) -> dict[str, Scored]:
    """The four linearity scores of the step from read-out l (X) to read-out l + 1 (Y); see the module doc.

    X: (n, d) and Y: (n, e) rows for the same tokens (torch on any device, or numpy); groups: (n,) integer
    prompt id of each row (folds and bootstrap resample whole prompts); n_folds >= 2 grouped folds (fewer
    prompts -> one fold per prompt; one prompt -> held-out scores NaN with a note); n_boot >= 1 prompt
    resamples (seeded; 95 % percentile intervals; one prompt -> NaN interval). Returns {key: Scored} for
    "linearity", "linearity_heldout", "linearity_residual" (NaN when e != d), "nonlinearity"; each ``n``
    is the number of rows. Computed in float64 on X's device.
    """
    fn = "linearity_scores"
    X = check_tensor(X, fn, "X", min_rows=1)
    Y = check_tensor(Y, fn, "Y", min_rows=1).to(X.device)
    n, d = X.shape
    if Y.shape[0] != n:
        raise MedinterpError(f"The 'Y' parameter of {fn} must have one row per row of X ({n}). "
                             f"Got {Y.shape[0]} rows instead.")
    n_folds = check_int(n_folds, "n_folds", fn, 2)
    n_boot = check_int(n_boot, "n_boot", fn, 1)
    g = check_groups(groups, n, fn, X.device)
    n_groups = int(g.max()) + 1
    boot = boot_index_tensor(n_groups, n_boot, seed, X.device) if n_groups >= 2 else None

    Z = X - X.mean(0)  # (n, d) centred once globally (the per-fold means below are small corrections)
    W = Y - Y.mean(0)  # (n, e)
    energy = W.square().sum()  # sum of squared centred Y
    if float(energy) == 0.0:
        return {k: nan_scored(n, "Y has zero variance: no fit to score") for k in KEYS}
    out: dict[str, Scored] = {}

    # Per-fold Gram and cross matrices; their sums are the full-sample ones.
    folds = group_folds(g, n_folds, seed) if n_groups >= 2 else torch.zeros_like(g)
    members = [torch.nonzero(folds == f).squeeze(1) for f in range(int(folds.max()) + 1)]
    S = [Z[i].T @ Z[i] for i in members]  # (d, d) each
    C = [Z[i].T @ W[i] for i in members]  # (d, e) each
    S_all, C_all = sum(S), sum(C)

    # In-sample: A = pinv(Z) W; residuals E = Z A - W, one row per token.
    if n <= d:
        out["linearity"] = nan_scored(n, TRIVIAL)
        out["linearity_residual"] = nan_scored(n, TRIVIAL)
    else:
        note = f"n_rows = {n} < 5 d = {5 * d}: in-sample fit is inflated (unrelated data give ~d/n)" \
            if n < 5 * d else ""
        A = _pinv_solve(S_all, C_all, rcond)
        E = Z @ A - W  # (n, e)
        out["linearity"] = _ratio_score(E.square().sum(1), W.square().sum(1), g, n_groups, boot, note)
        if W.shape[1] != d:
            out["linearity_residual"] = nan_scored(n, f"Y has {W.shape[1]} columns, X {d}: no residual Y - X")
        else:
            # Z spans itself, so W - Z has the residuals E of W (up to Z's variance in the cut directions).
            out["linearity_residual"] = _ratio_score(E.square().sum(1), (W - Z).square().sum(1), g, n_groups,
                                                     boot, note)
    if n_groups < 2:
        out["linearity_heldout"] = nan_scored(n, "one prompt: no held-out prompts to score")
        out["nonlinearity"] = nan_scored(n, "one prompt: no held-out prompts to score")
        return {k: out[k] for k in KEYS}

    # Held-out: per fold, the training Gram is the full one minus the fold's, corrected to the training mean.
    sse = torch.empty(n, dtype=Z.dtype, device=Z.device)
    sst = torch.empty_like(sse)
    err = torch.empty_like(sse)  # ||x A* - y|| in the RMS-normalised units of the training rows
    sum_z, sum_w = Z.sum(0), W.sum(0)
    interpolated = False
    for i, S_f, C_f in zip(members, S, C):
        n_train = n - len(i)
        z_t = (sum_z - Z[i].sum(0)) / n_train  # (d,) training mean (in globally centred coordinates)
        w_t = (sum_w - W[i].sum(0)) / n_train  # (e,)
        G_t = S_all - S_f - n_train * torch.outer(z_t, z_t)
        C_t = C_all - C_f - n_train * torch.outer(z_t, w_t)
        interpolated |= n_train <= d
        A_t = _pinv_solve(G_t, C_t, rcond)
        R = (Z[i] - z_t) @ A_t + w_t - W[i]  # (n_f, e) held-out residuals, intercept from training
        sse[i] = R.square().sum(1)
        sst[i] = (W[i] - W[i].mean(0)).square().sum(1)
        y_scale = ((energy - W[i].square().sum()) / n_train - w_t.square().sum()).sqrt()  # training RMS
        err[i] = sse[i].sqrt() / y_scale
    note = "training rows <= d in a fold: its map is the minimum-norm interpolant" if interpolated else ""
    out["linearity_heldout"] = _ratio_score(sse, sst, g, n_groups, boot, note)
    out["nonlinearity"] = _mean_score(err, g, n_groups, boot, note)
    return {k: out[k] for k in KEYS}
