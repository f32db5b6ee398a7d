"""What training tracks besides the weights: tokens since each latent fired, and the inference threshold.

- Dead latents (Gao et al. 2024): ``tokens_since_fired`` (m,) counts training tokens since latent j was last
  kept by the training rule; after a batch of n tokens every counter grows by n and those that fired reset to 0.
  A latent is dead when its counter reaches ``dead_tokens`` (train_config.py).
- Inference threshold (Bussmann et al. 2024): BatchTopK keeps the n*k largest activations of a batch, so the
  smallest kept activation is the batch's cut-off. Its EMA, theta <- beta * theta + (1 - beta) * min_kept (the
  first value taken as is), is the batch-free threshold used at inference, stored in the SAE's ``threshold``
  buffer so it is saved with the weights.

Under DDP each rank sees its own batch: the callers reduce ``fired`` (max), the token count (sum) and the
minimum (min) over ranks first (lightning.py), so every rank keeps the same state.
"""
from __future__ import annotations

import torch

from medinterp.sae.model import SparseAutoencoder


@torch.no_grad()
def update_tokens_since_fired_(counter: torch.Tensor, fired: torch.Tensor, n_tokens: int) -> torch.Tensor:
    """counter (m,) += n_tokens, then 0 where ``fired`` (m,) bool; in place, returns counter."""
    counter += n_tokens
    counter[fired] = 0
    return counter


@torch.no_grad()
def smallest_kept(f: torch.Tensor) -> torch.Tensor:
    """The smallest positive entry of the training latents f (n, m) as a float64 scalar; +inf if none."""
    positive = f[f > 0]
    if positive.numel() == 0:
        return torch.tensor(torch.inf, dtype=torch.float64, device=f.device)
    return positive.min().to(torch.float64)


@torch.no_grad()
def update_threshold_(sae: SparseAutoencoder, min_kept: torch.Tensor, beta: float) -> None:
    """EMA of the smallest kept activation into ``sae.threshold`` (every latent the same value). An infinite
    ``min_kept`` (nothing kept in the batch) leaves the threshold unchanged."""
    if not torch.isfinite(min_kept):
        return
    value = float(min_kept)
    if sae.threshold_is_set:
        value = beta * float(sae.threshold[0]) + (1.0 - beta) * value
    sae.threshold.fill_(value)


__all__ = ["smallest_kept", "update_threshold_", "update_tokens_since_fired_"]
