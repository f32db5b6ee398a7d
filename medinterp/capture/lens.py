"""The logit lens: what a read-out of the residual stream would predict if the model stopped there.

``lens_logits(parts, h)`` decodes read-out vectors (n, D) exactly as the model decodes its last one:

    logits = cap · tanh(lm_head(final_norm(h)) / cap)      (the cap only for soft-capped heads, e.g. Gemma 2)

nostalgebraist (2020), "interpreting GPT: the logit lens"; Belrose et al. (2023), arXiv 2303.08112, §2.

The final norm is applied exactly once. Read-out ``l`` (medinterp/capture/residual.py) is the residual
stream after ``l`` blocks, *before* any final norm, read-out ``n_layers`` included (the raw last-block
output); so ``lens_logits`` of read-out ``n_layers`` equals the model's own output logits. Two known
mistakes give other numbers: decoding without the final norm (one published library does), and
normalising transformers' ``hidden_states[-1]``, which already went through the final norm (twice).

:func:`output_logits` gives the model's own logits (its full forward: head, scaling and capping, whatever
the family does) at each prompt's last real token: the *final distribution* the lens is compared with.

Both call the modules themselves (never their weights), so a ZeRO-3 partitioned or offloaded head is
gathered by its own hooks, as in the model's forward.
"""
from __future__ import annotations

import torch

from medinterp.capture.tokens import TokenBatch
from medinterp.models import BoundModel, ModelHandle
from medinterp.models.head import head_logits


def lens_logits(parts: BoundModel, hidden: torch.Tensor) -> torch.Tensor:
    """Logit-lens logits (n, V) float32 of residual-stream read-outs ``hidden`` (n, D), in the model's dtype until
    the head's output: ``final_norm``, then ``lm_head``, then the soft cap ``parts.logit_softcap`` if any."""
    return head_logits(parts, parts.final_norm(hidden))


def output_logits(handle: ModelHandle, batch: TokenBatch) -> torch.Tensor:
    """The model's own output logits (B, V) float32 at each row's last real token (one full forward of ``batch``,
    already on the model's device).

    Only the distinct last positions of the batch go through the head (``logits_to_keep``: one position under left
    padding); a model without ``logits_to_keep`` computes every position's logits.
    """
    last = batch.last_index
    keep, column = torch.unique(last, return_inverse=True)  # the K distinct last positions; each row's column in them
    try:
        logits = handle.model(**batch.model_inputs(), use_cache=False, logits_to_keep=keep).logits  # (B, K, V)
    except TypeError:  # no logits_to_keep: every position
        logits, column = handle.model(**batch.model_inputs(), use_cache=False).logits, last
    return logits[torch.arange(len(last), device=logits.device), column.to(logits.device)].float()
