"""Contextualization of term representations (Ethayarajh 2019, "How contextual are contextualized word
representations?", EMNLP; reference code kawine/contextual ``analyze.py``).

A term's vectors across C contexts (the prompt set's templates) are V[t] (C, d). The centring of each
measure is fixed and stated, because the reference code mixes them (methods.md pitfall 4):

- :func:`self_similarity`: mean cosine over the C (C - 1) / 2 pairs of distinct contexts, UNcentred (like
  the ``anisotropy_cosine`` baseline it is adjusted by), in [-1, 1]; 1 when the term never changes.
- :func:`mev`: maximum explainable variance, the first principal component's share of the variance of the
  term's vectors, CENTRED on the term's own mean (sklearn PCA, as kawine/contextual's MEV), in [1/min(C-1, d), 1];
  an offset cloud gives about 1/d where an uncentred SVD would give about 1 (0.028 vs 0.988 in methods.md 5).
  A term with zero variance (identical vectors) has MEV 1 by convention: one static vector explains it.
- :func:`intra_similarity`: mean cosine of each token vector of a prompt to that prompt's (uncentred) mean
  vector, in [-1, 1].

Each is reported minus the layer's ``anisotropy_cosine`` (the ``*_adj`` rows) by the geometry method, which
also bootstraps these per-term / per-prompt values. Float64 on the input's device, no loop over terms.
"""
from __future__ import annotations

import torch

from medinterp.errors import MedinterpError
from medinterp.metrics._validation import check_groups, check_tensor

_TINY = torch.finfo(torch.float64).tiny


def _unit(V: torch.Tensor) -> torch.Tensor:
    """Rows scaled to unit norm along the last axis (zero rows stay zero)."""
    return V / V.norm(dim=-1, keepdim=True).clamp_min(_TINY)


def _check_contexts(V, fn: str) -> torch.Tensor:
    V = check_tensor(V, fn, "V", min_rows=1, ndim=3)
    if V.shape[1] < 2:
        raise MedinterpError(f"The 'V' parameter of {fn} must have at least 2 contexts per term "
                             f"(shape (n_terms, n_contexts, d)). Got shape {tuple(V.shape)} instead.")
    return V


def self_similarity(V) -> torch.Tensor:
    """V (n_terms, n_contexts, d) -> (n_terms,) mean pairwise cosine over distinct contexts, uncentred.

    With unit vectors u_c: sum_{c != c'} u_c . u_c' = ||sum_c u_c||^2 - C, so the mean over the C (C - 1)
    ordered pairs is (||sum_c u_c||^2 - C) / (C (C - 1)) — exact, O(C d) per term. Needs C >= 2.
    """
    V = _check_contexts(V, "self_similarity")
    C = V.shape[1]
    return (_unit(V).sum(1).square().sum(1) - C) / (C * (C - 1))


def mev(V) -> torch.Tensor:
    """V (n_terms, n_contexts, d) -> (n_terms,) first principal component's explained-variance ratio
    sigma_1^2 / sum sigma_i^2 of each term's vectors centred on the term's mean (1 when they are identical).

    Eigenvalues of the (C, C) Gram of the centred vectors (batched over terms); needs C >= 2.
    """
    V = _check_contexts(V, "mev")
    Vc = V - V.mean(1, keepdim=True)  # (T, C, d)
    lam = torch.linalg.eigvalsh(Vc @ Vc.transpose(1, 2)).clamp_min(0)  # (T, C) ascending
    total = lam.sum(1)
    # A variance at float64 round-off of the squared norms counts as none: the vectors are identical.
    static = total <= 1e-12 * V.square().sum((1, 2)).clamp_min(_TINY)
    return torch.where(static, torch.ones_like(total), lam[:, -1] / total.clamp_min(_TINY))


def intra_similarity(rows, groups) -> torch.Tensor:
    """rows (n, d), groups (n,) integer prompt id -> (n_groups,) mean over each prompt's rows of
    cos(row, the prompt's mean row), uncentred; groups in sorted order of their ids.

    Zero rows (and a prompt whose mean is zero) give cosine 0. A one-token prompt scores 1.
    """
    fn = "intra_similarity"
    rows = check_tensor(rows, fn, "rows", min_rows=1)
    g = check_groups(groups, len(rows), fn, rows.device)
    n_groups = int(g.max()) + 1
    count = torch.bincount(g, minlength=n_groups).to(rows.dtype)  # (G,)
    means = torch.zeros(n_groups, rows.shape[1], dtype=rows.dtype, device=rows.device).index_add_(0, g, rows)
    cos = (_unit(rows) * _unit(means)[g]).sum(1)  # (n,) the mean's scale does not change its direction
    return torch.zeros(n_groups, dtype=rows.dtype, device=rows.device).index_add_(0, g, cos) / count
