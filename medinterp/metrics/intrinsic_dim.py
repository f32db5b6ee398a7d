"""Intrinsic dimension of a layer's point cloud: TwoNN and the Levina-Bickel MLE, as scikit-dimension 0.5.0.

- :func:`twonn` (Facco, d'Errico, Rodriguez & Laio 2017, Sci. Rep. 7:12140), as
  ``skdim.id.TwoNN(discard_fraction=0.1)`` (method "linear") computes it: for each point the ratio
  mu = r2 / r1 of its second to first nearest-neighbour distance; the N ratios sorted ascending, the largest
  ``discard_fraction`` dropped (the first n_keep = int(N (1 - discard_fraction)) kept), the empirical CDF
  F_i = i / N (N counts the dropped ones too), and the dimension is the least-squares slope THROUGH THE ORIGIN
  of -log(1 - F_i) on log mu_i: sum(x y) / sum(x^2). Boundary effects bias it low above ~3 dimensions
  (a 10-D cube gives 8.8; methods.md 5).
- :func:`mle_id` (Levina & Bickel, NIPS 2004; combination by MacKay & Ghahramani 2005), as ``skdim.id.MLE()``
  with ``n_neighbors=k`` and its default ``comb="mle"``, ``unbiased=False``: point i's estimate from its k
  nearest other points at distances T_1 <= ... <= T_k is m_i = (k - 1) / sum_{j=1..k} log(T_k / T_j) (the
  j = k term is 0), and the layer's value is their harmonic mean 1 / mean(1 / m_i).

Both first drop exact duplicate rows (keeping one of each; they give r1 = 0 and an undefined ratio, and
LLM layers repeat tokens; the note counts them), then find neighbours exactly
(:func:`medinterp.metrics.device.nearest_distances`, float64 distances on X's device). Too few distinct rows
(TwoNN: n_keep < 2 or fewer than 3 rows; MLE: fewer than k + 1) -> NaN with the reason.

Confidence intervals: 95 % percentile bootstrap over points with each point's neighbour distances held fixed
(the N ratios mu, resp. the N pointwise 1 / m_i, are resampled and the estimator recomputed on them), seeded;
it covers the sampling of points, not the change of neighbours a real resample would cause.
:func:`intrinsic_dims` computes both from one neighbour search.
"""
from __future__ import annotations

import torch

from medinterp.errors import MedinterpError
from medinterp.metrics._validation import check_int, check_tensor
from medinterp.metrics.bootstrap import Scored, boot_index_tensor, nan_scored, scored_from_replicates
from medinterp.metrics.device import nearest_distances
from medinterp.validation import is_number


def _distinct(X: torch.Tensor) -> tuple[torch.Tensor, str]:
    """The distinct rows of X and a note counting the duplicates dropped ("" when none)."""
    U = torch.unique(X, dim=0)
    dropped = len(X) - len(U)
    return U, (f"{dropped} duplicate rows dropped" if dropped else "")


def _join(*notes: str) -> str:
    return "; ".join(n for n in notes if n)


def _too_few_twonn(m: int) -> str:
    return f"TwoNN needs at least 3 distinct rows; got {m}"


def _too_few_mle(m: int, k: int) -> str:
    return f"MLE with k = {k} needs at least k + 1 = {k + 1} distinct rows; got {m}"


def _twonn_from_distances(r12: torch.Tensor, discard_fraction: float, n_boot: int, seed: int,
                          note: str) -> Scored:
    """TwoNN from each point's (r1, r2) distances (N, 2), r1 > 0."""
    mu = r12[:, 1] / r12[:, 0]  # (N,)
    N = len(mu)
    n_keep = int(N * (1 - discard_fraction))
    if n_keep < 2:
        return nan_scored(N, _join(note, f"TwoNN keeps int({N} * (1 - {discard_fraction})) = {n_keep} < 2 ratios"))
    F = torch.arange(1, n_keep + 1, dtype=mu.dtype, device=mu.device) / N
    y = -torch.log1p(-F)  # (n_keep,)

    def slope(mu: torch.Tensor) -> torch.Tensor:  # (..., N) ratios -> (...) dimension
        x = torch.log(mu.sort(dim=-1).values[..., :n_keep])
        return (x * y).sum(-1) / x.square().sum(-1)

    reps = slope(mu[boot_index_tensor(N, n_boot, seed, mu.device)])  # (n_boot,)
    return scored_from_replicates(float(slope(mu)), reps, N, note)


def _mle_from_distances(T: torch.Tensor, n_boot: int, seed: int, note: str) -> Scored:
    """Levina-Bickel MLE, harmonic mean, from each point's k sorted neighbour distances T (N, k), T > 0."""
    k = T.shape[1]
    inv = torch.log(T[:, -1:] / T).sum(1) / (k - 1)  # (N,) 1 / m_i
    reps = 1.0 / inv[boot_index_tensor(len(inv), n_boot, seed, inv.device)].mean(1)
    return scored_from_replicates(float(1.0 / inv.mean()), reps, len(inv), note)


def _check_fraction(discard_fraction, fn: str) -> float:
    if not is_number(discard_fraction) or not 0.0 < discard_fraction < 1.0:
        raise MedinterpError(f"The 'discard_fraction' parameter of {fn} must be a float in (0, 1). "
                             f"Got {discard_fraction!r} instead.")
    return float(discard_fraction)


def twonn(X, *, discard_fraction: float = 0.1, n_boot: int = 200, seed: int = 0) -> Scored:
    """TwoNN intrinsic dimension of the rows of X (n, D) (module doc); ``n`` = distinct rows used."""
    fn = "twonn"
    X = check_tensor(X, fn, min_rows=1)
    discard_fraction = _check_fraction(discard_fraction, fn)
    n_boot = check_int(n_boot, "n_boot", fn, 1)
    U, note = _distinct(X)
    if len(U) < 3:
        return nan_scored(len(U), _join(note, _too_few_twonn(len(U))))
    return _twonn_from_distances(nearest_distances(U, 2), discard_fraction, n_boot, seed, note)


def mle_id(X, *, k: int = 20, n_boot: int = 200, seed: int = 0) -> Scored:
    """Levina-Bickel MLE intrinsic dimension (k neighbours, harmonic mean) of the rows of X (n, D) (module
    doc); ``n`` = distinct rows used."""
    fn = "mle_id"
    X = check_tensor(X, fn, min_rows=1)
    k = check_int(k, "k", fn, 2)
    n_boot = check_int(n_boot, "n_boot", fn, 1)
    U, note = _distinct(X)
    if len(U) < k + 1:
        return nan_scored(len(U), _join(note, _too_few_mle(len(U), k)))
    return _mle_from_distances(nearest_distances(U, k), n_boot, seed, note)


def intrinsic_dims(X, *, k: int = 20, discard_fraction: float = 0.1, n_boot: int = 200,
                   seed: int = 0) -> dict[str, Scored]:
    """{"id_twonn": :func:`twonn`, "id_mle": :func:`mle_id`} of X from ONE neighbour search (the k nearest
    distances contain r1 and r2); equal to calling the two functions."""
    fn = "intrinsic_dims"
    X = check_tensor(X, fn, min_rows=1)
    discard_fraction = _check_fraction(discard_fraction, fn)
    k = check_int(k, "k", fn, 2)
    n_boot = check_int(n_boot, "n_boot", fn, 1)
    U, note = _distinct(X)
    T = nearest_distances(U, min(k, len(U) - 1)) if len(U) >= 3 else None  # (N, k) sorted distances
    return {
        "id_twonn": _twonn_from_distances(T[:, :2], discard_fraction, n_boot, seed, note) if T is not None
        else nan_scored(len(U), _join(note, _too_few_twonn(len(U)))),
        "id_mle": _mle_from_distances(T, n_boot, seed, note) if len(U) >= k + 1
        else nan_scored(len(U), _join(note, _too_few_mle(len(U), k))),
    }
