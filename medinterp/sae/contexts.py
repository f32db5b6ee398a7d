"""Contexts for auto-interpretation: token strings and the residual stream at the SAE's layer, per context.

:class:`Contexts` is the typed input of :func:`medinterp.sae.autointerp.interpret`: n_ctx contexts of ctx_len
tokens each (display strings: the decoded pieces, so that joined they give the text), their activations
(n_ctx, ctx_len, d) at the SAE's read-out point, and a mask of the tokens that count.

:func:`capture_contexts` builds one from token ids already packed into fixed-length contexts (the corpus path
does the packing): one forward per batch through the capture hooks (medinterp/capture/residual.py), stopped
after the SAE's layer. The mask drops the first position of every context (its norm is an attention sink's,
many times the others'; the issue's data rule) and the tokenizer's special tokens (BOS, padding).
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from medinterp.capture.residual import capture_batch
from medinterp.capture.tokens import TokenBatch
from medinterp.errors import MedinterpError
from medinterp.models import ModelHandle


@dataclass(frozen=True)
class Contexts:
    """Token contexts and their residual-stream activations at the SAE's layer.

    ``tokens``: n_ctx sequences of ctx_len display strings (the decoded pieces: joined they give the text);
    ``activations``: (n_ctx, ctx_len, d) array or tensor (a memmap is read chunk by chunk);
    ``mask``: (n_ctx, ctx_len) bool, the tokens that count (e.g. not padding, not the first position), None = all.
    """

    tokens: Sequence[Sequence[str]]
    activations: Any
    mask: Any = None

    def __post_init__(self) -> None:
        shape = tuple(getattr(self.activations, "shape", ()))
        if len(shape) != 3:
            raise MedinterpError(f"Contexts: activations must have shape (n_ctx, ctx_len, d); got {shape}")
        n_ctx, ctx_len, _ = shape
        if len(self.tokens) != n_ctx:
            raise MedinterpError(f"Contexts: {len(self.tokens)} token lists for {n_ctx} contexts of activations")
        bad = next((i for i, t in enumerate(self.tokens) if len(t) != ctx_len), None)
        if bad is not None:
            raise MedinterpError(f"Contexts: context {bad} has {len(self.tokens[bad])} tokens; every context must "
                                 f"have ctx_len = {ctx_len} (the activations' second axis)")
        if self.mask is not None and tuple(np.shape(self.mask)) != (n_ctx, ctx_len):
            raise MedinterpError(f"Contexts: mask has shape {tuple(np.shape(self.mask))}; expected {(n_ctx, ctx_len)}")

    @property
    def shape(self) -> tuple[int, int]:
        return int(self.activations.shape[0]), int(self.activations.shape[1])


def capture_contexts(handle: ModelHandle, ids: Any, layer: int, batch_size: int = 8) -> Contexts:
    """Contexts of the token ids ``ids`` (n_ctx, ctx_len) with the residual stream at read-out ``layer``
    (0..n_layers), float32 in memory (n_ctx · ctx_len · d · 4 bytes)."""
    ids = torch.as_tensor(np.asarray(ids), dtype=torch.long)
    if ids.ndim != 2 or ids.shape[1] < 2:
        raise MedinterpError(f"capture_contexts: ids must be (n_ctx, ctx_len >= 2) token ids; got shape {tuple(ids.shape)}")
    if not 0 <= layer <= handle.n_layers:
        raise MedinterpError(f"capture_contexts: layer must be a read-out point in 0..{handle.n_layers}; got {layer}")
    n_ctx, ctx_len = ids.shape
    acts = np.zeros((n_ctx, ctx_len, handle.d_model), dtype=np.float32)
    positions = torch.arange(ctx_len)
    for a in tqdm(range(0, n_ctx, batch_size), desc="capture contexts", unit="batch", leave=False):
        rows = ids[a:a + batch_size]
        ones = torch.ones_like(rows)
        batch = TokenBatch(rows, ones, positions.expand_as(rows), torch.full((len(rows),), ctx_len - 1),
                           ones.float() / ctx_len)
        acts[a:a + len(rows)] = capture_batch(handle, batch, [layer], None)[0].float().cpu().numpy()
    special = set(handle.tokenizer.all_special_ids)
    mask = ~np.isin(ids.numpy(), list(special))
    mask[:, 0] = False
    vocab = {int(t): handle.tokenizer.decode([int(t)]) for t in np.unique(ids.numpy())}
    tokens = [[vocab[int(t)] for t in row] for row in ids.tolist()]
    return Contexts(tokens, acts, mask)


__all__ = ["Contexts", "capture_contexts"]
