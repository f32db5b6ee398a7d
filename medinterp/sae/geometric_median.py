"""Geometric median of a point cloud: the decoder bias's starting value (Gao et al. 2024; dictionary_learning).

The geometric median minimises the sum of Euclidean distances sum_i ||x_i - mu|| (the mean minimises the sum of
squared distances). It is robust to the residual stream's few huge-norm tokens, so the SAE starts centred on
the bulk of the data. Computed by Weiszfeld's algorithm (Weiszfeld 1937; Vardi & Zhang 2000 for the
coincident-point fix): mu <- sum_i w_i x_i / sum_i w_i with w_i = 1 / ||x_i - mu||, from the mean. A point that
coincides with mu (distance 0) would get an infinite weight; its distance is floored at ``eps`` instead, which
keeps the iteration finite and lets it stop at a data point that is the median.
"""
from __future__ import annotations

import torch


@torch.no_grad()
def geometric_median(points: torch.Tensor, max_iter: int = 200, tol: float = 1e-7, eps: float = 1e-12) -> torch.Tensor:
    """Weiszfeld's geometric median of ``points`` (n, d) -> (d,), computed in float64 on the points' device and
    returned in their dtype. Stops when an update moves mu by less than ``tol`` times the data's scale
    (mean distance to the mean) or after ``max_iter`` updates."""
    X = points.to(torch.float64)
    mu = X.mean(0)
    scale = (X - mu).norm(dim=1).mean().clamp_min(eps)
    for _ in range(max_iter):
        w = 1.0 / (X - mu).norm(dim=1).clamp_min(eps)  # (n,)
        new = (w[:, None] * X).sum(0) / w.sum()
        moved = (new - mu).norm()
        mu = new
        if moved <= tol * scale:
            break
    return mu.to(points.dtype)


__all__ = ["geometric_median"]
