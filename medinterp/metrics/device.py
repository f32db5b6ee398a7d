"""Distances, the exact k-nearest-neighbour graph and the silhouette on a torch device (the model's GPU).

The same quantities as scikit-learn's ``pairwise_distances`` (euclidean, cosine), UMAP's exact kNN as
:meth:`medinterp.methods.umap_geometry.UmapGeometry.neighbours` computes it, and ``silhouette_samples``
on a precomputed matrix, in float64 torch so that an (N, N) matrix of a 1000-point layer costs
milliseconds on a GPU instead of a CPU core. Equal to the scikit-learn references to float round-off
(tested to 1e-6 on CPU tensors); not yet called by the driver (issue 15: "kNN and silhouettes on the
model's device where it is a GPU").
"""
from __future__ import annotations

import torch

from medinterp.errors import MedinterpError, unknown_choice

METRICS = ("euclidean", "cosine")
CANDIDATE_MARGIN = 4  # extra float32 candidates per row whose exact distances nearest_distances recomputes


def distances(X: torch.Tensor, metric: str = "euclidean") -> torch.Tensor:
    """(N, N) float64 distances between the rows of ``X`` (N, D), zero diagonal, no negative values.

    euclidean: ||x_i − x_j||; cosine: 1 − cos(x_i, x_j), clipped to [0, 2] as scikit-learn does.
    """
    if metric not in METRICS:
        raise unknown_choice("metric for device distances:", metric, METRICS)
    if X.ndim != 2:
        raise MedinterpError(f"device distances need a 2-D (N, D) tensor; got shape {tuple(X.shape)}")
    X = X.to(torch.float64)
    if metric == "euclidean":
        D = torch.cdist(X, X, compute_mode="donot_use_mm_for_euclid_dist")
    else:
        unit = X / X.norm(dim=1, keepdim=True).clamp_min(torch.finfo(torch.float64).tiny)
        D = (1.0 - unit @ unit.T).clamp(0.0, 2.0)
    D.fill_diagonal_(0.0)
    return D.clamp_min(0.0)


def neighbours(X: torch.Tensor, k: int, metric: str = "euclidean") -> tuple[torch.Tensor, torch.Tensor]:
    """The exact kNN graph: ``(indices, distances)``, each (N, k), each row's k smallest distances in
    ascending order, the point itself first (distance 0), ties in index order (a stable sort)."""
    if not 1 <= k <= len(X):
        raise MedinterpError(f"device neighbours: k must be in [1, {len(X)}]; got {k}")
    D = distances(X, metric)
    order = torch.sort(D, dim=1, stable=True).indices[:, :k]
    return order, torch.gather(D, 1, order)


def silhouette_samples(D: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Per-point silhouette s(i) = (b − a) / max(a, b) from distances ``D`` (N, N) and integer ``labels`` (N,).

    a(i): mean distance to the other members of i's class; b(i): the smallest mean distance to another
    class; s(i) = 0 in a singleton class (scikit-learn's convention). Needs 2 <= classes <= N − 1.
    """
    classes, index = torch.unique(labels, return_inverse=True)
    if not 2 <= len(classes) <= len(labels) - 1:
        raise MedinterpError(f"silhouette needs 2 <= classes <= N - 1; got {len(classes)} classes in {len(labels)}")
    D = D.to(torch.float64)
    onehot = torch.nn.functional.one_hot(index, len(classes)).to(D.dtype)  # (N, C)
    sums, sizes = D @ onehot, onehot.sum(0)  # (N, C) distance sums per class, (C,)
    own = sizes[index]
    a = sums.gather(1, index[:, None])[:, 0] / (own - 1).clamp_min(1)
    means = sums / sizes
    means.scatter_(1, index[:, None], torch.inf)
    b = means.min(1).values
    s = (b - a) / torch.maximum(a, b)
    return torch.where(own > 1, torch.nan_to_num(s), torch.zeros_like(s))


def nearest_distances(X: torch.Tensor, k: int, chunk_elements: int = 1 << 25) -> torch.Tensor:
    """(N, k) float64 Euclidean distances from each row of ``X`` (N, D) to its k nearest OTHER rows, ascending.

    Exact, without an (N, N) matrix: rows are taken in chunks of ``chunk_elements // N``; for each chunk the
    ranking key ||x||^2 - 2 q.x (the squared distance minus the chunk row's own ||q||^2) is formed in float32
    from centred rows (one fused GEMM per chunk), the k + CANDIDATE_MARGIN smallest become candidates (the
    margin absorbs float32 mis-ordering, which can only swap near-equal distances), and the candidates'
    distances are recomputed exactly in float64 (||q - x||, one (chunk, D) difference per candidate slot)
    and sorted. A duplicate of a row is another row at distance 0. Needs 1 <= k <= N - 1.
    """
    n = len(X)
    if not 1 <= k <= n - 1:
        raise MedinterpError(f"device nearest_distances: k must be in [1, {n - 1}]; got {k}")
    X = X.to(torch.float64)
    X = X - X.mean(0)  # distances are shift-invariant; centring keeps the float32 expansion accurate
    X32 = X.to(torch.float32)
    sq = X32.square().sum(1)  # (N,)
    n_cand = min(n - 1, k + CANDIDATE_MARGIN)
    step = max(1, chunk_elements // n)
    out = torch.empty(n, k, dtype=torch.float64, device=X.device)
    for start in range(0, n, step):
        rows = torch.arange(start, min(start + step, n), device=X.device)
        key = torch.addmm(sq.expand(len(rows), n), X32[rows], X32.T, alpha=-2.0)  # (m, N) float32
        key[torch.arange(len(rows), device=X.device), rows] = torch.inf  # not its own neighbour
        cand = torch.topk(key, n_cand, dim=1, largest=False, sorted=False).indices  # (m, n_cand)
        exact = torch.stack([(X[rows] - X[cand[:, c]]).norm(dim=1) for c in range(n_cand)], 1)
        out[rows] = exact.sort(dim=1).values[:, :k]
    return out
