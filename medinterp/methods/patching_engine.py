"""The activation-patching engine: clean activations into corrupted runs, one (site, layer) at a time.

Given a batch of same-length clean/corrupted prompt pairs and each pair's two answer tokens, it returns
the logit difference LD = logit(clean answer) − logit(corrupted answer) at the last prompt position for

- the clean run (``ld_clean``), the corrupted run (``ld_corrupt``), and
- the corrupted run with one site patched from the clean run (``ld_patched[site]``, one row per layer).

Sites (the layer each is reported at follows ``medinterp/methods/base.py``):

=============  ========================================================  =====================
site           what is replaced in the corrupted run                     reported layers
=============  ========================================================  =====================
``resid_diff`` residual stream entering block l, at the positions where  read-outs 0..n_layers
               the clean and corrupted token ids differ
``resid_last`` same read-outs, last prompt position only                 0..n_layers
``resid_all``  same read-outs, every real position (a check: P = 1 at 0) 0..n_layers
``attn``       attention output of block b, every real position          b + 1 = 1..n_layers
``mlp``        MLP output of block b, every real position                b + 1 = 1..n_layers
=============  ========================================================  =====================

Read-out ``l`` is the output of the embedding (``l = 0``) or of block ``l − 1``; read-out ``n_layers``
is the raw output of the last block, before the final norm.

Two engines give the same numbers (tests check 1e-4):

- ``naive``: one full forward of the corrupted batch per (site, layer) with a patching hook;
- ``fast`` (prefix reuse): below the patched block the patched run *is* the corrupted run, so the
  corrupted run's block outputs are cached once and every block under the patch site has its
  ``forward`` temporarily replaced by "return the cached output". Patching at read-out l then costs
  n_layers − l blocks instead of n_layers, about half the work over all layers
  (:func:`medinterp.hooks.skip_with_outputs`). This needs no knowledge of the architecture beyond
  ``handle.parts``.

Both engines run the clean prompts once (caching every site they need) and compute logits at the last
position only, for the two answer tokens only. The hooks are :mod:`medinterp.hooks`' record, patch and
skip-with-cached-output: every hook is removed and every ``forward`` restored in ``finally``.

References: Zhang & Nanda 2023 (arXiv 2309.16042); Heimersheim & Nanda 2024 (arXiv 2404.15255).
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from medinterp.capture import TokenBatch
from medinterp.hooks import forward_hooks, output_tensor, patch, record, skip_with_outputs
from medinterp.models import ModelHandle
from medinterp.models.head import answer_logits

RESID_SITES = ("resid_diff", "resid_last", "resid_all")
SITES = (*RESID_SITES, "attn", "mlp")
DEFAULT_SITES = ("resid_diff", "resid_last", "attn", "mlp")
ENGINES = ("fast", "naive")


@dataclass
class PairBatch:
    """Clean and corrupted prompts of the same pairs, padded alike, with each pair's answer tokens."""

    clean: TokenBatch
    corrupt: TokenBatch
    answer_ids: torch.Tensor  # (B, 2): [clean answer token, corrupted answer token]

    def to(self, device: torch.device) -> PairBatch:
        return PairBatch(self.clean.to(device), self.corrupt.to(device), self.answer_ids.to(device))

    def rows(self, index: torch.Tensor) -> PairBatch:
        """The pairs ``index`` of this batch."""
        return PairBatch(self.clean.rows(index), self.corrupt.rows(index), self.answer_ids[index])


@dataclass
class PatchOutput:
    """Logit differences of one batch: (B,) for the clean/corrupted runs, (n_site_layers, B) per site."""

    ld_clean: torch.Tensor
    ld_corrupt: torch.Tensor
    ld_patched: dict[str, torch.Tensor]
    n_forwards: int
    n_block_calls: int  # decoder blocks actually computed (skipped ones excluded)


def site_layers(site: str, n_layers: int) -> list[int]:
    """The reported layers of ``site``: read-outs 0..n for residual sites, b + 1 = 1..n for attn/mlp."""
    return list(range(n_layers + 1)) if site in RESID_SITES else list(range(1, n_layers + 1))


def _site_module(handle: ModelHandle, site: str, layer: int) -> tuple[nn.Module, int]:
    """The module whose output is patched for ``site`` at reported ``layer``, and the first block to compute."""
    parts = handle.parts
    if site in RESID_SITES:  # read-out l: the embedding (l = 0) or block l − 1; blocks l.. must run
        return (parts.embed if layer == 0 else parts.layers[layer - 1]), layer
    block = layer - 1  # attn/mlp of block b are reported at b + 1; block b itself must run
    return (parts.attn(block) if site == "attn" else parts.mlp(block)), block


def _position_mask(site: str, batch: PairBatch) -> torch.Tensor:
    """(B, T) bool: the positions ``site`` patches."""
    clean = batch.clean
    if site == "resid_diff":
        return (clean.input_ids != batch.corrupt.input_ids) & clean.attention_mask.bool()
    if site == "resid_last":
        mask = torch.zeros_like(clean.attention_mask, dtype=torch.bool)
        mask[torch.arange(mask.shape[0], device=mask.device), clean.last_index] = True
        return mask
    return clean.attention_mask.bool()  # resid_all, attn, mlp: every real position


# --------------------------------------------------------------------------------------------------
# The logit difference at the last position (the two answer tokens only: medinterp/models/head.py)
# --------------------------------------------------------------------------------------------------
def _logit_diff(handle: ModelHandle, tokens: TokenBatch, answer_ids: torch.Tensor) -> torch.Tensor:
    """Run the backbone (embed → blocks → final norm) on ``tokens``; LD at each row's last position, (B,)."""
    out = handle.parts.backbone(**tokens.model_inputs(), use_cache=False)
    hidden = output_tensor(out.last_hidden_state if hasattr(out, "last_hidden_state") else out)
    last_BD = hidden[torch.arange(hidden.shape[0], device=hidden.device), tokens.last_index.to(hidden.device)]
    logits = answer_logits(handle, last_BD, answer_ids.to(last_BD.device))
    return logits[:, 0] - logits[:, 1]


@torch.inference_mode()
def reference_logit_diff(handle: ModelHandle, tokens: TokenBatch, answer_ids: torch.Tensor, row: int = 0) -> float:
    """LD of one prompt from the model's own forward (its LM head, scaling and capping), unpadded.

    A run-time guard for :func:`answer_logits` on architectures the tests do not cover (a family that
    scales its logits elsewhere would otherwise give silently wrong LDs).
    """
    ids = tokens.input_ids[row][tokens.attention_mask[row].bool()][None].to(handle.device)
    try:
        logits = handle.model(input_ids=ids, use_cache=False, logits_to_keep=1).logits
    except TypeError:  # models without logits_to_keep
        logits = handle.model(input_ids=ids, use_cache=False).logits
    last = logits[0, -1].float()
    return float(last[answer_ids[row, 0]] - last[answer_ids[row, 1]])


# --------------------------------------------------------------------------------------------------
# The engine
# --------------------------------------------------------------------------------------------------
def _site_keys(handle: ModelHandle, sites: Sequence[str]) -> dict[tuple[str, int], tuple[nn.Module, int]]:
    """Every (site kind, layer) the sites need from the clean run → (module, first block to compute).

    The three residual sites share one cache (key ``("resid", l)``).
    """
    keys = {}
    for site in sites:
        kind = "resid" if site in RESID_SITES else site
        for layer in site_layers(site, handle.n_layers):
            keys[(kind, layer)] = _site_module(handle, site, layer)
    return keys


@torch.inference_mode()
def patch_pairs(handle: ModelHandle, batch: PairBatch, sites: Sequence[str], engine: str = "fast",
                min_gap: float | None = None) -> PatchOutput:
    """Logit differences of the clean, corrupted and patched runs of one batch of pairs.

    ``batch.clean`` and ``batch.corrupt`` must have the same shape and padding (same-length pairs).
    With ``min_gap``, pairs whose
    |LD_clean − LD_corrupt| is below it (or 0) are not patched, since their P would be discarded: their
    patched LDs are NaN, and the patched forwards run on the other pairs only.
    """
    assert engine in ENGINES, engine
    assert batch.clean.input_ids.shape == batch.corrupt.input_ids.shape, "pairs must tokenize to equal lengths"
    batch = batch.to(handle.device)
    parts, n = handle.parts, handle.n_layers

    # 1. Clean run: cache the output of every module a site patches.
    wanted = _site_keys(handle, sites)
    clean_cache: dict[Any, torch.Tensor] = {}
    with forward_hooks([(module, record(clean_cache, key)) for key, (module, _) in wanted.items()]):
        ld_clean = _logit_diff(handle, batch.clean, batch.answer_ids)

    # 2. Corrupted run: cache every block's output (the fast engine replays them below the patch).
    corrupt_blocks: dict[Any, torch.Tensor] = {}
    hooks = [(block, record(corrupt_blocks, j)) for j, block in enumerate(parts.layers)]
    with forward_hooks(hooks if engine == "fast" else []):
        ld_corrupt = _logit_diff(handle, batch.corrupt, batch.answer_ids)
    block_outputs = [corrupt_blocks[j] for j in range(n)] if engine == "fast" else []
    n_pairs = len(ld_clean)
    kept = torch.arange(n_pairs, device=ld_clean.device)
    if min_gap is not None:
        gap = ld_clean - ld_corrupt
        kept = torch.nonzero((gap.abs() >= min_gap) & (gap != 0)).flatten()
        if len(kept) < n_pairs:  # patch only the pairs whose scores are kept
            batch = batch.rows(kept)
            clean_cache = {key: value[kept] for key, value in clean_cache.items()}
            block_outputs = [out[kept] for out in block_outputs]

    # 3. One patched forward per (site, layer); the fast engine skips the blocks below the patch.
    n_forwards, n_block_calls = 2, 2 * n
    ld_patched = {}
    for site in sites:
        if len(kept) == 0:  # nothing to patch: no forwards
            ld_patched[site] = ld_clean.new_full((len(site_layers(site, n)), n_pairs), math.nan)
            continue
        mask = _position_mask(site, batch)
        kind = "resid" if site in RESID_SITES else site
        rows = []
        for layer in site_layers(site, n):
            module, first_block = wanted[(kind, layer)]
            skipped = first_block if engine == "fast" else 0
            with skip_with_outputs(parts, block_outputs[:skipped]), \
                    forward_hooks([(module, patch(clean_cache[(kind, layer)], mask))]):
                rows.append(_logit_diff(handle, batch.corrupt, batch.answer_ids))
            n_forwards += 1
            n_block_calls += n - skipped
        ld_patched[site] = ld_clean.new_full((len(rows), n_pairs), math.nan)
        ld_patched[site][:, kept] = torch.stack(rows)
    return PatchOutput(ld_clean, ld_corrupt, ld_patched, n_forwards, n_block_calls)
