"""Massive-activation tokens: found by their norm, left out of the SAE's tokens, passed through when spliced.

Some language models put a few tokens at norms tens of times the rest ("massive activations", Sun et al. 2024,
arXiv:2402.17762: the first token, and in Gemma 3 also some delimiters — at Gemma-3-270M's layer 9 the
apostrophe, ||x||^2 about 110 times the median, 2 tokens in 33k). Position 0 is already dropped (packing.py);
the others are not positional. Such a token's squared error dwarfs the rest (one of them held 86 % of the
held-out squared error of the default run, FVU 1.22), and an SAE trained on a few thousand batches never learns
it. A token is an outlier when

    ||x|| > ratio * median_t ||x_t||            (median over the TRAINING store's tokens; default ratio 4)

Outliers are left out of training and of the held-out metrics (FVU, L0, dead fraction, the per-latent table)
and counted in the run (metrics.json ``n_outliers``); in CE-loss recovered they are spliced back unchanged, as
position 0 is (the SAE never saw such tokens). ``ratio=None`` keeps every token.
"""
from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch

from medinterp.sae.activations import ActivationStore

NORM_BATCH = 8192  # rows read per pass when computing norms


def row_norms(store: ActivationStore, layer: int) -> np.ndarray:
    """||x_t|| (n_tokens,) float64 of every row of ``store`` at ``layer`` (raw, unscaled)."""
    return np.concatenate([x.double().norm(dim=1).numpy() for x in store.batches(layer, NORM_BATCH)])


def norm_limit(store: ActivationStore, layer: int, ratio: float | None) -> float:
    """The largest kept norm, ``ratio`` x the median token norm of ``store`` (+inf when ``ratio`` is None)."""
    return float("inf") if ratio is None else float(ratio * np.median(row_norms(store, layer)))


class KeptRows(ActivationStore):
    """The rows of ``store`` at ``layer`` whose norm is at most ``limit``: the same reading interface
    (``rows``, ``batches``, ``array``, ``n_tokens``, ``mean_squared_norm``, ``scale``), row i being the i-th kept
    row. ``n_outliers`` rows are left out."""

    def __init__(self, store: ActivationStore, layer: int, limit: float):
        self.__dict__.update(store.__dict__)
        norms = row_norms(store, layer)
        self.kept = np.flatnonzero(norms <= limit)  # (n_kept,) rows of the full store
        self.n_outliers = int(store.n_tokens - len(self.kept))
        self.n_tokens = len(self.kept)
        self._msn = float(np.mean(np.square(norms[self.kept]))) if len(self.kept) else float("nan")
        self._full = store

    def rows(self, layer: int, index: np.ndarray) -> torch.Tensor:
        return self._full.rows(layer, self.kept[np.asarray(index, dtype=np.int64)])

    def array(self, name: str) -> np.ndarray:
        return self._full.array(name)[self.kept]

    def mean_squared_norm(self, layer: int) -> float:
        """E||x||^2 over the kept rows (the layer the view was built for)."""
        return self._msn


def pass_through_outliers(reconstruct: Callable[[torch.Tensor], torch.Tensor], limit: float
                          ) -> Callable[[torch.Tensor], torch.Tensor]:
    """``reconstruct`` (n, d) -> (n, d) on the tokens with ||h|| <= limit; the others come back unchanged."""
    def spliced(h: torch.Tensor) -> torch.Tensor:
        out = reconstruct(h)
        keep = h.float().norm(dim=-1, keepdim=True) <= limit  # (n, 1)
        return torch.where(keep, out.to(h.dtype), h)
    return spliced


__all__ = ["KeptRows", "norm_limit", "pass_through_outliers", "row_norms"]
