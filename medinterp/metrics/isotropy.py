"""Global anisotropy of a layer's token vectors, two distinct quantities under two names (methods.md pitfall 3).

(The paper's LOCAL anisotropy, how line-like each neighbourhood is, is metrics/anisotropy.py.)

- :func:`anisotropy_spectral` (LLM-Microscope, Razzhigaev et al. 2024): lambda_max / sum(lambda) of the
  centred covariance, in [1/d, 1]; 1 for rank-1 data, 1/d in the isotropic limit. For n isotropic Gaussian
  rows it is biased up to about (1 + sqrt(d/n))^2 / d (the Marchenko-Pastur edge). Centred, so blind to a
  common offset of all vectors.
- :func:`anisotropy_cosine` (Ethayarajh 2019, "How contextual are contextualized word representations?"):
  the mean cosine of random pairs of distinct rows, UNcentred, in [-1, 1]: about 0 for isotropic data
  around the origin, near 1 when a common offset dominates (N(0, I_100) + 5 gives 0.96). ``standardize=True``
  z-scores each dimension first (Timkey & van Schijndel 2021, "All Bark and No Bite": raw cosines are
  dominated by 1-3 rogue dimensions of huge mean and variance). Z-scoring also removes the common offset, so
  the standardised value is about 0 unless the row norms are very unequal; the gap between the raw and the
  standardised value is the anisotropy carried by per-dimension offsets and scales.
"""
from __future__ import annotations

import numpy as np
import torch

from medinterp.errors import MedinterpError
from medinterp.metrics._validation import check_int, check_tensor
from medinterp.metrics.bootstrap import Scored, boot_index_tensor, mean_with_ci, nan_scored, scored_from_replicates

RITZ_DIM = 32  # principal directions of the full sample in which each bootstrap covariance starts its search
POWER_STEPS = 3  # full-space power-iteration steps refining each replicate's Ritz vector


def _principal(Xc: torch.Tensor, r: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Eigenvalues (descending, all of them) of Xc^T Xc and its top-r unit eigenvectors (d, r), from the
    smaller of the (d, d) and (n, n) Gram matrices (their nonzero eigenvalues coincide)."""
    n, d = Xc.shape
    if d <= n:
        lam, V = torch.linalg.eigh(Xc.T @ Xc)
        return lam.flip(0), V[:, -r:].flip(1)
    lam, U = torch.linalg.eigh(Xc @ Xc.T)
    lam, U = lam.flip(0), U[:, -r:].flip(1)
    V = Xc.T @ U  # (d, r): the right singular vectors times the singular values
    return lam, V / V.norm(dim=0, keepdim=True).clamp_min(torch.finfo(Xc.dtype).tiny)


def _bootstrap_top_eigen(Xc: torch.Tensor, V: torch.Tensor, counts: torch.Tensor) -> torch.Tensor:
    """lambda_max / trace of the covariance of each row resample, (n_boot,).

    ``counts`` (n_boot, n) is how often each row is drawn. Resample b has covariance
    S_b = Xc^T diag(c_b) Xc / n - mu_b mu_b^T with mu_b = Xc^T c_b / n. Its top eigenvalue is found by the
    Rayleigh-Ritz method in the full sample's top principal directions V (d, r) followed by POWER_STEPS
    power-iteration steps in the full space; each step can only raise the Rayleigh quotient towards
    lambda_max (tested against exact eigenvalues of explicit resampled covariances). No (d, d) matrix per
    replicate: each step costs two (n, d) x (d, n_boot) products.
    """
    n = Xc.shape[0]
    mu = counts @ Xc / n  # (B, d)
    trace = counts @ Xc.square().sum(1) / n - mu.square().sum(1)  # (B,)
    P = Xc @ V  # (n, r) coordinates in the principal directions
    r = P.shape[1]
    outer = (P[:, :, None] * P[:, None, :]).reshape(n, r * r)  # (n, r*r) each row's p p^T
    mu_r = mu @ V  # (B, r)
    M = (counts @ outer).reshape(-1, r, r) / n - mu_r[:, :, None] * mu_r[:, None, :]  # (B, r, r)
    _, Q = torch.linalg.eigh(M.double())  # (B, r, r) ascending
    Q = Q.to(Xc.dtype)
    v = Q[:, :, -1] @ V.T  # (B, d) top Ritz vectors

    def apply(v: torch.Tensor) -> torch.Tensor:  # S_b v_b for every b, (B, d)
        return ((Xc @ v.T) * counts.T).T @ Xc / n - mu * (mu * v).sum(1, keepdim=True)

    for _ in range(POWER_STEPS):
        v = apply(v)
        v = v / v.norm(dim=1, keepdim=True).clamp_min(torch.finfo(v.dtype).tiny)
    return (v * apply(v)).sum(1) / trace


def anisotropy_spectral(X, *, n_boot: int = 200, seed: int = 0) -> Scored:
    """Spectral anisotropy lambda_max / trace of the centred covariance of X (n, d), in [1/min(n-1, d), 1].

    The value: eigenvalues in float64 on X's device (eigh of the smaller Gram matrix). The 95 % interval
    resamples rows (``n_boot`` seeded resamples, float32 products; see :func:`_bootstrap_top_eigen` for how
    each resample's top eigenvalue is found without a d x d eigendecomposition per replicate) and is
    recentred on the value (``scored_from_replicates(recentre=True)``): resampling duplicates rows, which
    inflates lambda_max when the top eigenvalues are close (isotropic data: every replicate lies above the
    estimate), so the plain percentile interval would exclude the estimate. ``n`` = rows. Zero variance
    (all rows equal) -> NaN with a note.
    """
    fn = "anisotropy_spectral"
    X = check_tensor(X, fn, min_rows=1)
    n_boot = check_int(n_boot, "n_boot", fn, 1)
    Xc = X - X.mean(0)
    lam, V = _principal(Xc, min(RITZ_DIM, *Xc.shape))
    trace = lam.clamp_min(0).sum()
    if float(trace) == 0.0:
        return nan_scored(len(X), "X has zero variance: no spectrum")
    counts = torch.zeros(n_boot, len(X), dtype=torch.float32, device=X.device)
    counts.scatter_add_(1, boot_index_tensor(len(X), n_boot, seed, X.device), torch.ones_like(counts))
    reps = _bootstrap_top_eigen(Xc.to(torch.float32), V.to(torch.float32), counts)
    return scored_from_replicates(float(lam[0] / trace), reps, len(X), recentre=True)


def anisotropy_cosine(X, *, standardize: bool = False, n_pairs: int = 10_000, n_boot: int = 200,
                      seed: int = 0) -> Scored:
    """Cosine anisotropy: mean cos(x_i, x_j) over ``n_pairs`` random pairs of distinct rows i != j of X (n, d),
    uncentred (Ethayarajh 2019), in [-1, 1]. ``standardize=True`` first z-scores each dimension
    ((x - mean) / std over the rows; Timkey & van Schijndel 2021; constant dimensions are dropped).

    Pairs are drawn uniformly with replacement by ``np.random.default_rng(seed)``; the 95 % interval
    resamples the pairs (:func:`mean_with_ci`, same seed). Zero-norm rows have no direction and are left
    out (the note says how many); fewer than 2 usable rows -> NaN. ``n`` = pairs.
    """
    fn = "anisotropy_cosine"
    X = check_tensor(X, fn, min_rows=1)
    n_pairs = check_int(n_pairs, "n_pairs", fn, 2)
    n_boot = check_int(n_boot, "n_boot", fn, 1)
    if not isinstance(standardize, bool):
        raise MedinterpError(f"The 'standardize' parameter of {fn} must be a bool. Got {standardize!r} instead.")
    if standardize:
        std = X.std(0)
        X = (X[:, std > 0] - X.mean(0)[std > 0]) / std[std > 0]
    norm = X.norm(dim=1)
    dropped = int((norm == 0).sum())
    note = f"{dropped} zero-norm rows left out" if dropped else ""
    U = X[norm > 0] / norm[norm > 0, None]  # (m, d) unit rows
    m = len(U)
    if m < 2:
        return nan_scored(n_pairs, f"fewer than 2 rows with a direction ({m})")
    rng = np.random.default_rng(seed)
    i = rng.integers(0, m, n_pairs)
    j = rng.integers(0, m - 1, n_pairs)
    j = j + (j >= i)  # uniform over the rows other than i
    i, j = (torch.from_numpy(a).to(U.device) for a in (i, j))
    cos = (U[i] * U[j]).sum(1).clamp(-1.0, 1.0)  # (n_pairs,)
    return Scored(mean_with_ci(cos.cpu().numpy(), n_boot=n_boot, seed=seed), note)
