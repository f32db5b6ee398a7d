"""The unembedding as the model applies it: LM head, then the final logit soft-cap some families use.

Every method that turns hidden states into logits goes through here, so a model quirk (Gemma 2's
``final_logit_softcapping``: ``cap * tanh(logit / cap)``, carried by the adapter as ``parts.logit_softcap``)
is handled once:

- :func:`head_logits`: final-normed hidden states (..., D) -> logits over the whole vocabulary (..., V);
- :func:`answer_logits`: only K chosen tokens per row (B, K), the head restricted to those K rows; on a
  262k vocabulary (Gemma) the full head costs more than a few decoder blocks per forward, K rows cost nothing.

Both return float32 and equal the model's own logits at those tokens (tests/methods/test_patching.py,
tests/capture/test_lens.py).
"""
from __future__ import annotations

import torch
from torch import nn

from medinterp.models.arch import BoundModel
from medinterp.models.load import ModelHandle
from medinterp.models.weights import full_weights


def soft_cap(parts: BoundModel, logits: torch.Tensor) -> torch.Tensor:
    """``cap * tanh(logits / cap)`` when the family caps its final logits (``parts.logit_softcap``), else unchanged."""
    cap = parts.logit_softcap
    return torch.tanh(logits / cap) * cap if cap else logits


def head_logits(parts: BoundModel, normed: torch.Tensor) -> torch.Tensor:
    """Logits (..., V) float32 of final-normed hidden states (..., D): ``lm_head``, then the soft cap if any."""
    return soft_cap(parts, parts.lm_head(normed).float())


def answer_logits(handle: ModelHandle, hidden_BD: torch.Tensor, answer_ids_BK: torch.Tensor) -> torch.Tensor:
    """Logits (B, K) float32 of the tokens ``answer_ids_BK`` from final-normed hidden states ``hidden_BD``.

    The LM head restricted to the K rows (a full head when it is not a plain ``nn.Linear``), then the soft cap.
    float32 even for bf16 models: the callers take small differences of these logits.
    """
    head = handle.parts.lm_head
    if isinstance(head, nn.Linear):
        with full_weights(head):  # a no-op unless ZeRO-3 partitions or accelerate offloads the head
            weight_BKD = head.weight[answer_ids_BK].float()
            bias_BK = head.bias[answer_ids_BK].float() if head.bias is not None else None
        logits = torch.einsum("bd,bkd->bk", hidden_BD.float(), weight_BKD.to(hidden_BD.device))
        if bias_BK is not None:
            logits = logits + bias_BK.to(logits.device)
    else:
        logits = head(hidden_BD).gather(-1, answer_ids_BK).float()
    return soft_cap(handle.parts, logits)


__all__ = ["answer_logits", "head_logits", "soft_cap"]
