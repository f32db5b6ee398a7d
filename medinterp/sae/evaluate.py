"""Evaluate an SAE on held-out activation batches with its inference encoder (threshold or per-token top-k).

Every token of every batch counts (the caller chooses the token mask, the same as in training: non-pad tokens
without the first position). The reconstruction metrics are metrics.py's; CE-loss recovered and KL need the
language model and are not here yet (docs/sae.md).
"""
from __future__ import annotations

from collections.abc import Iterable

import torch
from tqdm.auto import tqdm

from medinterp.sae.batches import batch_matrix
from medinterp.sae.metrics import ReconstructionMetrics, ReconstructionStats
from medinterp.sae.model import SparseAutoencoder


@torch.no_grad()
def evaluate_sae(sae: SparseAutoencoder, batches: Iterable, progress: bool = True) -> ReconstructionMetrics:
    """FVU, explained variance, L0 and dead fraction of ``sae`` over ``batches`` of (tokens, d) activations."""
    stats = ReconstructionStats(sae.config.d, sae.config.n_latents)
    device = sae.W_enc.device
    for batch in tqdm(batches, desc="SAE evaluation", unit="batch", disable=not progress):
        x = batch_matrix(batch, sae.config.d).to(device)
        f = sae.encode(x)
        stats.update(x, sae.decode(f), f)
    return stats.result()


__all__ = ["evaluate_sae"]
