"""Logit-lens statistics: how close each layer's decoded prediction is to the model's final one.

The caller decodes read-out l through the model's final norm and unembedding (and soft-cap, for Gemma:
logits = cap * tanh(logits / cap)), applying the final norm exactly once (transformers' last hidden state
already includes it; methods.md pitfall 6), and passes those ``lens_logits`` with the model's
``final_logits`` at the read-out position of each prompt (nostalgebraist 2020, "interpreting GPT: the logit
lens"; LLM-Microscope omits the norm). Per prompt:

- KL(final || lens) = sum_v p_final(v) (log p_final(v) - log p_lens(v)) in nats, >= 0, 0 when the two
  distributions are equal; log-softmax in float64; terms with p_final(v) = 0 contribute 0, and a token the
  lens gives probability 0 but the final layer does not gives +inf.
- rank: the number of vocabulary entries whose lens logit is STRICTLY greater than the lens logit of the
  final distribution's top-1 token (0 = the lens ranks it first; ties do not push it down). The final
  top-1 is ``argmax`` of the final logits (the lowest index among tied maxima).
- agree: 1.0 when rank == 0 (the lens's top-1 set contains the final top-1), else 0.0; its mean over
  prompts is ``lens_top1_agree``.
"""
from __future__ import annotations

import numpy as np
import torch

from medinterp.errors import MedinterpError


def _logits(L, name: str) -> torch.Tensor:
    """(B, V) float64 logits; -inf (a masked vocabulary entry) is allowed, NaN and +inf are not."""
    fn = "lens_stats"
    if not isinstance(L, torch.Tensor):
        try:
            L = torch.as_tensor(np.asarray(L, dtype=np.float64))
        except (TypeError, ValueError):
            raise MedinterpError(f"The {name!r} parameter of {fn} must be a (B, V) tensor of logits. "
                                 f"Got a non-numeric {type(L).__name__} instead.") from None
    if L.ndim != 2 or L.shape[0] < 1 or L.shape[1] < 2:
        raise MedinterpError(f"The {name!r} parameter of {fn} must be a (B, V) tensor of logits with V >= 2. "
                             f"Got shape {tuple(L.shape)} instead.")
    L = L.to(torch.float64)
    if bool(torch.isnan(L).any() | (L == torch.inf).any() | (L == -torch.inf).all(1).any()):
        raise MedinterpError(f"The {name!r} parameter of {fn} must hold logits without NaN or +inf and at "
                             "least one finite value per row. Got some instead.")
    return L


def lens_stats(final_logits, lens_logits) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """final_logits, lens_logits: (B, V) -> (kl (B,) float64 nats, rank (B,) int64, agree (B,) float64);
    see the module doc. Computed on final_logits' device."""
    final = _logits(final_logits, "final_logits")
    lens = _logits(lens_logits, "lens_logits").to(final.device)
    if lens.shape != final.shape:
        raise MedinterpError(f"The 'lens_logits' parameter of lens_stats must have the shape of final_logits "
                             f"{tuple(final.shape)}. Got shape {tuple(lens.shape)} instead.")
    log_p = torch.log_softmax(final, dim=1)
    log_q = torch.log_softmax(lens, dim=1)
    p = log_p.exp()
    kl = torch.where(p > 0, p * (log_p - log_q), torch.zeros_like(p)).sum(1)  # (B,)
    top = final.argmax(dim=1, keepdim=True)  # (B, 1)
    rank = (lens > lens.gather(1, top)).sum(1)  # (B,)
    return kl, rank, (rank == 0).to(torch.float64)
