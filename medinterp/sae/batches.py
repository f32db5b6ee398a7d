"""What an SAE batch is: a (tokens, d) tensor of activations, bare or first in a tuple (a TensorDataset row)."""
from __future__ import annotations

import torch

from medinterp.errors import MedinterpError


def batch_matrix(batch, d: int) -> torch.Tensor:
    """The (n, d) activation matrix of a batch: a tensor, or a tuple/list whose first item is one (TensorDataset)."""
    x = batch[0] if isinstance(batch, (tuple, list)) and batch else batch
    if not isinstance(x, torch.Tensor) or x.ndim != 2 or x.shape[1] != d or x.shape[0] < 1:
        got = f"shape {tuple(x.shape)}" if isinstance(x, torch.Tensor) else type(x).__name__
        raise MedinterpError(f"An SAE batch must be a (tokens, {d}) tensor of activations; got {got}.")
    return x


__all__ = ["batch_matrix"]
