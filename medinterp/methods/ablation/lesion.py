"""The lesion scorer: KL and Δlog p of each lesioned run against the intact one, fast and exact.

For each block the caller holds :func:`medinterp.hooks.replace_by_identity`; :class:`LesionScorer`
runs the lesioned teacher-forced pass with the blocks below the lesion replaying the intact run's
outputs (:func:`medinterp.hooks.skip_with_outputs`) and, for a plain linear LM head, scores it from
one sliced log-sum-exp over the vocabulary (:func:`lse_rows`). :func:`token_metrics` is the plain
reference computation the tests compare with.
"""
from __future__ import annotations

import logging
import math
from typing import Any

import numpy as np
import torch
from torch import nn

from medinterp.models.weights import full_weights, is_partitioned
from medinterp.hooks import forward_hooks, record, skip_with_outputs
from medinterp.methods.ablation.generate import answer_hidden, answer_logprobs
from medinterp.models import ModelHandle

log = logging.getLogger(__name__)


def token_metrics(logp_clean: torch.Tensor, logp_ablated: torch.Tensor, answer_ids: torch.Tensor,
                  answer_mask: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """Per-row mean over answer tokens of KL(clean ‖ ablated) and of log p_clean − log p_ablated of the answer.

    logp_*: (B, A, V) log-probabilities; answer_ids, answer_mask: (B, A). KL per token is
    sum_v p_c(v) (log p_c(v) − log p_a(v)), clamped at 0 against round-off. Returns two (B,) float64 arrays.
    """
    kl_tok = (logp_clean.exp() * (logp_clean - logp_ablated)).sum(-1).clamp(min=0.0)  # (B, A)
    idx = answer_ids.unsqueeze(-1)
    dlogp_tok = (logp_clean.gather(-1, idx) - logp_ablated.gather(-1, idx)).squeeze(-1)  # (B, A)
    m = answer_mask.to(kl_tok.dtype)
    count = m.sum(1).clamp(min=1.0)
    kl = (kl_tok * m).sum(1) / count
    dlogp = (dlogp_tok * m).sum(1) / count
    return kl.double().cpu().numpy(), dlogp.double().cpu().numpy()


class LesionScorer:
    """KL and Δlog p of lesioned runs of one batch against its intact run, computed fast and exactly.

    Built from the intact teacher-forced pass (the model's own forward, via :func:`answer_logprobs`),
    during which it records every block's output and the final norm's output ``h``; the intact logits
    at the answer steps are then ``head`` applied to ``h`` (one vocabulary pass), checked against the
    model's own logits at the last step. ``extra`` are an image prompt's other model inputs
    (:mod:`~medinterp.methods.ablation.generate`). For each block the
    caller holds :func:`~medinterp.hooks.replace_by_identity` and calls :meth:`lesion`; :meth:`results` then gives every lesion's
    per-prompt (kl, dlogp). In the lesioned passes the blocks below the ablated one replay the recorded
    outputs, and, for a plain linear head ``logit = W h + b`` (``head``, from :func:`lesion_head`), only
    the log-sum-exp of the lesioned logits is taken over the vocabulary. With ``p`` the intact
    distribution, ``Δh = h_lesioned − h_intact`` and ``lse`` the log-sum-exp of each run's logits (per
    answer token):

        KL    = Σ_v p_v (log p_v − log q_v) = (lse_les − lse_int) · Σ_v p_v − (Σ_v p_v W_v) · Δh
        Δlogp = log p_a − log q_a          = (lse_les − lse_int) − W_a · Δh

    That vocabulary pass runs once for all the lesions of the batch (:func:`lse_rows`: every block's
    answer positions in one matrix product per vocabulary slice, ~1.3× the throughput of one product per
    block on CPU). Both formulas are differences of nearby quantities; a row whose final hidden state is
    bit-identical to the intact one has identical logits, so its Δlse is exactly 0 (the products' shapes
    differ, so it is set rather than recomputed). The intact log-probabilities from ``head`` must match
    the model's own at the last step (|Δ| <= 1e-3, a guard against heads that scale or cap logits
    elsewhere); otherwise,
    and with ``head=None``, each lesioned run uses the model's own head and :func:`token_metrics` (the
    plain reference computation the tests compare with; ``fast=False`` also turns prefix reuse off).
    """

    def __init__(self, handle: ModelHandle, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                 answer_ids: torch.Tensor, answer_mask: torch.Tensor,
                 head: tuple[torch.Tensor, torch.Tensor | None] | None = None, fast: bool = True,
                 extra: dict[str, torch.Tensor] | None = None) -> None:
        self.handle, self.answer_ids, self.answer_mask = handle, answer_ids, answer_mask
        self.fast, self.extra = fast, extra
        self.args = (input_ids, attention_mask, answer_ids, answer_mask)
        self.pending: list[torch.Tensor | tuple[np.ndarray, np.ndarray]] = []
        parts, n_answer = handle.parts, answer_ids.shape[1]
        self.head = head if fast else None
        outputs: dict[Any, torch.Tensor] = {}
        hooks = [(b, record(outputs, j)) for j, b in enumerate(parts.layers)]
        with forward_hooks([*hooks, (parts.final_norm, record(outputs, "norm"))]):
            # the model's own head: at every answer step for the plain path; at the last step only (the guard
            # below) when the fast path computes the intact logits itself
            own = answer_logprobs(handle, *self.args, last_only=self.head is not None, extra=extra)  # (B, A or 1, V)
        self.block_outputs = [outputs[j] for j in range(handle.n_layers)]
        if self.head is None:
            self.logp_clean = own
            return
        weight, bias = self.head
        with torch.inference_mode():
            hidden = outputs["norm"][:, -n_answer:]
            self.h = hidden.double()  # (B, A, D)
            logits = torch.nn.functional.linear(hidden, weight, bias).float()  # (B, A, V): the one intact vocab pass
            self.lse = _lse_of_logits(logits)  # (B, A) float64
            logp = logits.sub_(self.lse.float()[..., None])
            error = float((logp[:, -1:] - own).abs().max())  # a head that scales or caps logits shows at any step
            if error > 1e-3:
                log.warning("ablation: the LM head of %s is not logits = W h + b (max |Δ log p| = %.2g); "
                            "using the model's own forward for every block", handle.name, error)
                self.head = None
                self.logp_clean = answer_logprobs(handle, *self.args, extra=extra)
                return
            p = logp.exp_()
            self.p_mass = p.sum(-1).double()                                        # Σ_v p_v, (B, A)
            self.u = torch.einsum("bav,vd->bad", p, weight.float()).double()       # Σ_v p_v W_v, (B, A, D)
            self.w_answer = weight[answer_ids].double()                            # W_a, (B, A, D)
        self.logp_clean = None  # the fast path does not keep (B, A, V) log-probs

    @torch.inference_mode()
    def lesion(self, block: int) -> None:
        """Run the lesioned pass for ``block`` (the caller holds :func:`~medinterp.hooks.replace_by_identity` for it)."""
        replayed = self.block_outputs[:block] if self.fast else []
        with skip_with_outputs(self.handle.parts, replayed):
            if self.head is None:
                self.pending.append(token_metrics(self.logp_clean, answer_logprobs(self.handle, *self.args, extra=self.extra),
                                                  self.answer_ids, self.answer_mask))
            else:
                self.pending.append(answer_hidden(self.handle, *self.args, extra=self.extra))  # (B, A, D), after the final norm

    @torch.inference_mode()
    def results(self) -> tuple[np.ndarray, np.ndarray]:
        """(kl, dlogp), each (lesions, B) float64, of every :meth:`lesion` so far, in call order."""
        pending, self.pending = self.pending, []
        if self.head is None:
            return np.stack([p[0] for p in pending]), np.stack([p[1] for p in pending])
        hidden = torch.stack(pending)  # (L, B, A, D)
        weight, bias = self.head
        lse = lse_rows(hidden.reshape(-1, hidden.shape[-1]), weight, bias).view(hidden.shape[:3])
        dh = hidden.double() - self.h
        d_lse = torch.where((dh == 0).all(-1), 0.0, lse - self.lse)
        kl_tok = (d_lse * self.p_mass - (self.u * dh).sum(-1)).clamp(min=0.0)
        dlogp_tok = d_lse - (self.w_answer * dh).sum(-1)
        m = self.answer_mask.to(kl_tok.dtype)
        count = m.sum(1).clamp(min=1.0)
        return (((kl_tok * m).sum(-1) / count).cpu().numpy(), ((dlogp_tok * m).sum(-1) / count).cpu().numpy())

    def score(self, block: int) -> tuple[np.ndarray, np.ndarray]:
        """Per-prompt (kl, dlogp), each (B,), of one lesion (the caller holds :func:`~medinterp.hooks.replace_by_identity`)."""
        self.lesion(block)
        kl, dlogp = self.results()
        return kl[0], dlogp[0]


VOCAB_SLICE = 8192  # vocabulary rows per matrix product in lse_rows
MAX_ROWS = 4096     # hidden rows per product (bounds the (rows, slice) logits block: 128 MB in fp32)


def lse_rows(hidden: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """log Σ_v exp(W_v · h + b_v) for each row h of ``hidden`` (N, D): (N,) float64.

    The logits are never held whole: the vocabulary is taken ``VOCAB_SLICE`` rows at a time and at most
    ``MAX_ROWS`` hidden rows at a time; the slices combine as in :func:`_lse_of_logits`.
    """
    out = []
    for r0 in range(0, max(1, hidden.shape[0]), MAX_ROWS):
        h = hidden[r0:r0 + MAX_ROWS]
        acc = _LseAccumulator(h.shape[:-1], h.device)
        for v0 in range(0, weight.shape[0], VOCAB_SLICE):
            acc.add(torch.nn.functional.linear(h, weight[v0:v0 + VOCAB_SLICE],
                                               None if bias is None else bias[v0:v0 + VOCAB_SLICE]).float())
        out.append(acc.value())
    return torch.cat(out)


def _lse_of_logits(logits: torch.Tensor) -> torch.Tensor:
    """log Σ exp over the last axis of float32 ``logits`` (left unchanged), float64 out, slice by slice."""
    acc = _LseAccumulator(logits.shape[:-1], logits.device)
    for v0 in range(0, logits.shape[-1], VOCAB_SLICE):
        acc.add(logits[..., v0:v0 + VOCAB_SLICE].clone())
    return acc.value()


class _LseAccumulator:
    """A running log-sum-exp over vocabulary slices: each slice's max and Σ exp(z − max) in float32 (the
    sum is accurate to ~1e-7 relative), combined across slices in float64 with a running max."""

    def __init__(self, shape: torch.Size, device: torch.device) -> None:
        self.top = torch.full(shape, -math.inf, dtype=torch.float64, device=device)
        self.total = torch.zeros(shape, dtype=torch.float64, device=device)

    def add(self, z: torch.Tensor) -> None:
        """Fold in one slice of logits (float32; overwritten)."""
        z_top = z.amax(-1, keepdim=True)
        z_sum = z.sub_(z_top).exp_().sum(-1).double()
        z_top = z_top.squeeze(-1).double()
        new = torch.maximum(self.top, z_top)
        self.total = self.total * (self.top - new).exp() + z_sum * (z_top - new).exp()
        self.top = new

    def value(self) -> torch.Tensor:
        return self.top + self.total.log()


def lesion_head(handle: ModelHandle) -> tuple[torch.Tensor, torch.Tensor | None] | None:
    """``(weight, bias)`` of the LM head when logits are exactly ``hidden @ W.T + b``; else None.

    None for heads that are not a plain ``nn.Linear`` and for models that soft-cap their logits
    (``final_logit_softcapping``, Gemma 2): those take the model's own forward. The scorer reads the
    weight outside the forward, where a ZeRO-3 partitioned or offloaded head holds only a placeholder
    (and the model's own forward re-partitions it after every use), so such a head is gathered once
    with :func:`medinterp.models.weights.full_weights` (a collective: every rank calls this in the same
    place) into a private copy: one head per rank (Llama-3.3-70B: 2.1 GB in bf16). An ordinary head is
    returned as it is, not copied.
    """
    head = handle.parts.lm_head
    if type(head) is not nn.Linear or handle.parts.logit_softcap:
        return None
    if not (is_partitioned(head) or head.weight.device.type == "meta"):
        return head.weight, head.bias
    with full_weights(head):
        weight = head.weight.detach().clone()
        bias = head.bias.detach().clone() if head.bias is not None else None
    return weight, bias
