"""The three sparsity rules that turn pre-activations (n, m) into latents f (n, m), f >= 0.

Gradients flow only through the kept entries (the selection itself is a mask): a latent that is not kept
gets no gradient from the reconstruction (what the auxiliary loss, objective.py, is for).
"""
from __future__ import annotations

import torch


def topk_per_token(pre: torch.Tensor, k: int) -> torch.Tensor:
    """TopK (Gao et al. 2024): each row keeps its k largest ReLU(pre) entries; (n, m) -> (n, m), at most k
    nonzeros per row (fewer where a row has fewer than k positive pre-activations)."""
    acts = pre.relu()
    values, index = acts.topk(k, dim=-1, sorted=False)  # (n, k)
    return torch.zeros_like(acts).scatter(-1, index, values)


def batch_topk(pre: torch.Tensor, k: int) -> torch.Tensor:
    """BatchTopK (Bussmann et al. 2024): the n * k largest ReLU(pre) entries of the whole (n, m) batch are kept,
    the rest are zero; k latents per token on average (exactly n * k nonzeros when that many are positive)."""
    acts = pre.relu()
    flat = acts.flatten()
    values, index = flat.topk(min(k * pre.shape[0], flat.numel()), sorted=False)
    return torch.zeros_like(flat).scatter(-1, index, values).view_as(acts)


def jumprelu(pre: torch.Tensor, threshold: torch.Tensor) -> torch.Tensor:
    """JumpReLU: f = ReLU(pre) * [pre > theta], theta (m,) one per latent (or equal: BatchTopK at inference).
    theta <= 0 gives plain ReLU (dictionary_learning's unset threshold -1 included)."""
    return pre.relu() * (pre > threshold)


__all__ = ["batch_topk", "jumprelu", "topk_per_token"]
