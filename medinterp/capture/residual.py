"""Capture the residual stream, layer by layer, with forward hooks.

Read-out point ``l`` (0..n_layers) is the residual stream after ``l`` blocks: ``l = 0`` is the output of
the embedding module, ``l ≥ 1`` the raw output of block ``l-1``. This equals transformers'
``hidden_states[l]`` for every ``l`` except the last: transformers applies the final norm to the last
entry, while we store the raw block output (the residual stream itself, comparable across layers).

The LM head is never computed: we call the adapter's backbone (no unembedding) and stop the forward
pass right after the last requested layer. Each hook reduces its (B, T, D) output to (B, D) at once,
so memory is bounded by one batch, not by the number of prompts.
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from tqdm.auto import tqdm

from medinterp.capture.limits import DEFAULT_BATCH_TOKENS, memory_errors, prompt_batches
from medinterp.capture.tokens import TokenBatch, encode, reduce_tokens
from medinterp.errors import MedinterpError
from medinterp.hooks import forward_hooks, record
from medinterp.models import BoundModel, ModelHandle


def readout_modules(parts: BoundModel) -> list[torch.nn.Module]:
    """Modules whose outputs are the residual stream at read-out points 0..n_layers."""
    return [parts.embed, *parts.layers]


@torch.inference_mode()
def capture_batch(handle: ModelHandle, batch: TokenBatch, layers: Sequence[int], reduction: str | None) -> list[torch.Tensor]:
    """Residual stream at ``layers`` for one batch: a list of (B, D) tensors, or (B, T, D) if ``reduction`` is None."""
    modules = readout_modules(handle.parts)
    stop_at = max(layers)  # nothing after the last requested read-out runs
    captured: dict[int, torch.Tensor] = {}
    batch = batch.to(handle.device)
    reduce = None if reduction is None else (lambda hidden: reduce_tokens(hidden, batch, reduction))
    with forward_hooks([(modules[layer], record(captured, layer, reduce, stop=layer == stop_at)) for layer in layers]):
        handle.parts.backbone(**batch.model_inputs(), use_cache=False)
    return [captured[layer] for layer in layers]


def batch_order(handle: ModelHandle, texts: Sequence[str], batch_size: int,
                batch_tokens: int | None = DEFAULT_BATCH_TOKENS,
                names: Sequence[str] | None = None) -> list[np.ndarray]:
    """Prompt indices per batch, in order of token length (less padding), each batch within ``batch_size``
    prompts and ``batch_tokens`` padded tokens; every prompt checked against the model's context
    (medinterp/capture/limits.py). Deterministic, so every rank of a data-parallel run cuts the same
    batches and can take its share by batch index."""
    return prompt_batches(handle, texts, batch_size, batch_tokens, names)


def capture_indices(handle: ModelHandle, texts: Sequence[str], idx: np.ndarray, reduction: str = "last",
                    term_spans: Sequence[tuple[int, int]] | None = None, layers: Sequence[int] | None = None,
                    batch_size: int | None = None, batch_tokens: int | None = None) -> np.ndarray:
    """Reduced residual stream of the prompts ``texts[idx]`` (one batch): (n_readouts, len(idx), d_model) float32.

    ``batch_size`` and ``batch_tokens`` (the run's limits) only go into the out-of-memory message."""
    layers = list(range(handle.n_layers + 1)) if layers is None else list(layers)
    spans = [term_spans[i] for i in idx] if term_spans is not None else None
    batch = encode(handle.tokenizer, [texts[i] for i in idx], reduction, spans)
    with memory_errors(batch_size or len(idx), batch_tokens, handle.device):
        acts = capture_batch(handle, batch, layers, reduction)
    return np.stack([act.float().cpu().numpy() for act in acts])


def capture(handle: ModelHandle, texts: Sequence[str], reduction: str = "last", batch_size: int = 32,
            term_spans: Sequence[tuple[int, int]] | None = None, layers: Sequence[int] | None = None,
            desc: str = "capture", batch_tokens: int | None = DEFAULT_BATCH_TOKENS,
            names: Sequence[str] | None = None) -> np.ndarray:
    """Reduced residual stream for every prompt, in memory: an array (n_readouts, n_prompts, d_model), float32.

    Prompts are batched in order of token length (less padding), and written back in input order.
    ``batch_tokens`` and ``names`` (prompt names for the too-long error): see :func:`batch_order`. To stream
    batches to disk (the activation cache), use :class:`medinterp.capture.cache.ActivationCapture`.
    """
    layers = list(range(handle.n_layers + 1)) if layers is None else list(layers)
    bad = [layer for layer in layers if not 0 <= layer <= handle.n_layers]
    if bad:
        raise MedinterpError(f"layer(s) {bad} out of range for {handle.name}; valid: 0..{handle.n_layers}")
    batches = batch_order(handle, texts, batch_size, batch_tokens, names)
    shape = (len(layers), len(texts), handle.d_model)
    out = np.zeros(shape, dtype=np.float32)
    for idx in tqdm(batches, desc=desc, unit="batch", leave=False):
        out[:, idx] = capture_indices(handle, texts, idx, reduction, term_spans, layers, batch_size, batch_tokens)
    return out
