"""Unit-norm decoder rows: the gradient projection before each step and the renormalisation after it.

A sparsity penalty or top-k rule can be gamed by shrinking latents and growing decoder rows; fixing
||W_dec[i]|| = 1 removes that freedom and makes activations comparable across latents (Bricken et al. 2023;
Gao et al. 2024). Adam's update along a row's own direction would only change its norm, which the
renormalisation undoes, so the gradient's component parallel to each row is removed first:

    g_i <- g_i - (g_i . w_i) w_i          (w_i = W_dec[i] / ||W_dec[i]||, g_i = dL/dW_dec[i])

and after the optimizer step every row is divided by its norm.
"""
from __future__ import annotations

import torch


@torch.no_grad()
def remove_parallel_gradient(W_dec: torch.Tensor, grad: torch.Tensor) -> torch.Tensor:
    """The gradient (m, d) of W_dec (m, d) without its component along each row: <result_i, W_dec[i]> = 0."""
    unit = W_dec / W_dec.norm(dim=1, keepdim=True).clamp_min(torch.finfo(W_dec.dtype).tiny)
    return grad - (grad * unit).sum(1, keepdim=True) * unit


@torch.no_grad()
def normalise_rows_(W_dec: torch.Tensor) -> torch.Tensor:
    """Scale every row of W_dec (m, d) to unit Euclidean norm, in place; returns W_dec."""
    return W_dec.div_(W_dec.norm(dim=1, keepdim=True).clamp_min(torch.finfo(W_dec.dtype).tiny))


__all__ = ["normalise_rows_", "remove_parallel_gradient"]
