"""Layer ablation: remove one decoder block at a time and measure how much the answers change.

Procedure (methods.md 1.3; Marinescu et al., ICLR 2026, who judged with GPT-4o):

1. Pick up to ``max_prompts`` prompts, spread evenly over the domain's items (:func:`select_prompts`).
2. The intact model answers each prompt greedily (``max_new_tokens``, left padding, ``do_sample=False``).
3. For each block ``l``, :func:`ablate_layer` replaces the block by the identity (its output is its
   input; the block computes nothing), and with it in place:

   a. one teacher-forced forward of prompt + intact answer gives the lesioned next-token distributions
      along the intact answer (logits only at the answer positions, via ``logits_to_keep``), from which,
      per prompt, averaged over the answer's tokens (EOS included when the answer ends with one):

      - ``kl``    = mean_t KL(p_intact(·|x, a<t) ‖ p_lesioned(·|x, a<t)), nats, >= 0;
      - ``dlogp`` = mean_t [log p_intact(a_t|x, a<t) − log p_lesioned(a_t|x, a<t)], nats;

   b. only if the judge needs text (LLM judges): the lesioned model's own greedy answer.
4. The judge scores each (prompt, block) from 1 (no change) to 10 (gibberish).

Step 3a is where the time goes (one pass per block and batch), and exact shortcuts make it about five
times faster on Gemma-3-270M (:class:`LesionScorer`; tests check them against the plain computation to
1e-4 relative; docs/benchmarks.md):

- **prefix reuse**: below block ``l`` the lesioned run *is* the intact run, so the intact pass caches
  every block's output and blocks ``0..l-1`` replay them (:func:`~medinterp.methods.patching_engine.skip_blocks`);
  only blocks ``l+1..`` are computed;
- **no second vocabulary pass**: with a plain linear LM head (no logit soft-capping), KL and Δlog p
  follow from the lesioned run's log-sum-exp over the vocabulary and its final hidden state alone
  (the intact distribution's mean unembedding ``Σ_v p_v W_v`` is computed once per batch); see
  :class:`LesionScorer` for the formulas. Other heads use the model's own forward and :func:`token_metrics`;
- **one vocabulary pass per batch**: those log-sum-exps are taken for all the blocks of a batch together,
  in slices of the vocabulary (:func:`lse_rows`), and the intact logits once.

Rows (labeling ``all``; block ``l`` at read-out layer ``l + 1``, see methods/base.py): ``kl``, ``dlogp``
and ``judge_score`` (mean over prompts with a percentile-bootstrap 95 % CI); for LLM judges also
``judge_missing`` (failed items, no CI), ``judge_coverage`` and ``judge_agreement``, the Spearman
correlation across prompts between KL and the LLM score (no CI; NaN where either is constant).

Judge coverage. An LLM judge can fail (a server that answers 500 or garbage, a dead local server); its
failed items are missing, and identical answers are scored 1 without being sent. So that an outage never
reads as "no damage" (a mean over the unsent identical items only), a block's ``judge_coverage`` is the
fraction of the items *sent* to the judge that got a valid verdict (cached verdicts count as answered).
Below ``min_judge_coverage`` (default 0.8) the block's ``judge_score`` is NaN, without CI, with the note
``judge coverage 0.25 < 0.80``. A block none of whose items was sent (every lesioned answer identical to
the intact one) keeps ``judge_score`` 1 (true: the answers did not change), coverage 1, and a note saying
so. The summary carries the coverage per layer and ``degraded`` (true when any sent item went
unanswered), and the runner ends the log with one WARNING naming the coverage.

Generation under ablation keeps the KV cache correct instead of turning it off: transformers 5 passes
the cache to every block (as ``cache`` from 5.24 on, ``past_key_values`` before) and each attention
module appends its keys/values for its layer, so a skipped block would leave its layer's cache empty,
and the cache length (read from layer 0) and the masks would be wrong whenever block 0 is skipped. The
identity therefore appends zero keys/values of the right shape for its own layer (never read, since
the block stays skipped for the whole ``generate`` call), so every layer's cache keeps the same
length. Tests check that generation under ablation with the cache equals a no-cache greedy reference
on a copy of the model with the block deleted. ``use_cache=False`` gives the same tokens but costs
O(T²): ~17× slower for 16 tokens on CPU.
"""
from __future__ import annotations

import logging
import math
import warnings
from collections import Counter
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, TYPE_CHECKING

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from medinterp.capture import forward_hooks
from medinterp.capture.limits import (DEFAULT_MAX_BATCH_TOKENS, check_positive_int, memory_errors, prompt_batches,
                                      prompt_names)
from medinterp.errors import MedinterpError
from medinterp.judges import DeterministicJudge, JudgeItem, Verdict
from medinterp.methods.base import ItemValue, Measurement, Method, MethodResult, register_method
from medinterp.metrics import Estimate, mean_with_ci
from medinterp.models import BoundModel, ModelHandle
from medinterp.prompts import PromptSet
from medinterp.prompts.schema import Prompt

if TYPE_CHECKING:
    from medinterp.cell import Cell

log = logging.getLogger(__name__)


# ---------------------------------------------------------------------------------------------------
# The ablation hook
# ---------------------------------------------------------------------------------------------------
def _tuple_by_default() -> bool:
    """Decoder blocks return a tuple in transformers 4.x and a tensor in 5.x (their annotations are unreliable)."""
    import transformers

    return int(transformers.__version__.split(".")[0]) < 5


def block_returns_tuple(handle: ModelHandle, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> list[bool]:
    """Observe, per block, whether its output is a tuple, with hooks during one forward of the intact model."""
    seen: dict[int, bool] = {}

    def make_hook(i: int):
        def hook(_module, _inputs, output):
            seen[i] = isinstance(output, tuple)
        return hook

    with torch.inference_mode(), forward_hooks([(block, make_hook(i)) for i, block in enumerate(handle.parts.layers)]):
        handle.parts.backbone(input_ids=input_ids[:1], attention_mask=attention_mask[:1],
                              position_ids=_positions(attention_mask[:1]), use_cache=False)
    return [seen.get(i, _tuple_by_default()) for i in range(handle.n_layers)]


def _append_placeholder_kv(cache: Any, attn: nn.Module | None, hidden: torch.Tensor, block: int) -> None:
    """Append zero keys/values (B, n_kv_heads, T, head_dim) to the skipped block's layer of a KV cache.

    Keeps every layer's cache the same length (see the module docstring); the zeros are never read.
    """
    config = getattr(attn, "config", None)
    head_dim = getattr(attn, "head_dim", None)
    if config is None or head_dim is None or not hasattr(cache, "update"):
        raise MedinterpError(f"ablate_layer: cannot keep the KV cache consistent for block {block} "
                             f"({type(attn).__name__} has no config/head_dim); generate with use_cache=False")
    n_kv = getattr(config, "num_key_value_heads", None) or config.num_attention_heads
    shape = (hidden.shape[0], n_kv, hidden.shape[1], head_dim)
    cache.update(hidden.new_zeros(shape), hidden.new_zeros(shape), getattr(attn, "layer_idx", block))


CACHE_KWARGS = ("cache", "past_key_values", "past_key_value")  # transformers >= 5.24, 5.0–5.23, 4.x


@contextmanager
def ablate_layer(parts: BoundModel, layer: int, returns_tuple: bool | None = None) -> Iterator[None]:
    """Replace decoder block ``layer`` by the identity for the duration of the ``with`` block.

    The block's ``forward`` is swapped for a function that returns its input hidden states (the first
    positional argument, or ``hidden_states=``) without computing anything; module hooks still run.
    When a KV cache is passed (``cache``, ``past_key_values`` or ``past_key_value``, by transformers
    version), zero keys/values are appended for this block's layer so that all layers' caches keep one
    length. If the original forward returns a tuple (``returns_tuple``; default: transformers 4.x yes,
    5.x no; :func:`block_returns_tuple` observes it), the replacement returns ``(hidden,)``, plus
    ``None`` for the attention weights when ``output_attentions=True``. The original is restored in ``finally``.
    """
    n = len(parts.layers)
    if isinstance(layer, bool) or not isinstance(layer, int) or not -n <= layer < n:
        raise MedinterpError(f"ablate_layer: layer must be a block index in 0..{n - 1}; got {layer!r}")
    block = parts.layers[layer]
    own = block.__dict__.get("forward")  # an instance-level forward someone else installed, if any
    as_tuple = _tuple_by_default() if returns_tuple is None else returns_tuple
    attn = parts.attn(layer % n) if hasattr(parts, "attn") else None

    def identity(*args: Any, **kwargs: Any):
        hidden = args[0] if args else kwargs["hidden_states"]
        cache = next((kwargs[k] for k in CACHE_KWARGS if kwargs.get(k) is not None), None)
        if cache is not None:
            _append_placeholder_kv(cache, attn, hidden, layer % n)
        if not as_tuple:
            return hidden
        return (hidden, None) if kwargs.get("output_attentions") else (hidden,)

    block.forward = identity
    try:
        yield
    finally:
        if own is not None:
            block.forward = own
        else:
            del block.forward


# ---------------------------------------------------------------------------------------------------
# Prompts, generation and teacher-forced log-probs
# ---------------------------------------------------------------------------------------------------
def select_prompts(prompt_set: PromptSet, templates: Sequence[str], max_prompts: int | None, seed: int) -> list[Prompt]:
    """Up to ``max_prompts`` prompts (items × templates), spread evenly over the items.

    Items are visited in a seeded random order, round after round; each visit takes one of the item's
    not yet used templates (also in seeded order), so every item gets floor(m/n) or ceil(m/n) prompts.
    ``None`` (or a number >= all prompts) keeps every prompt. Returned template-major, in item order.
    """
    per_item: dict[str, list[Prompt]] = {item.id: [] for item in prompt_set.items}
    for template in templates:
        for prompt in prompt_set.prompts(template):
            per_item[prompt.item_id].append(prompt)
    everything = [p for t in templates for p in prompt_set.prompts(t)]
    if max_prompts is None or max_prompts >= len(everything):
        return everything
    rng = np.random.default_rng(seed)
    ids = [prompt_set.items[i].id for i in rng.permutation(len(prompt_set.items))]
    order = {i: rng.permutation(len(per_item[i])).tolist() for i in ids}
    chosen: set[tuple[str, str]] = set()
    for round_ in range(len(templates)):
        for i in ids:
            if len(chosen) < max_prompts and round_ < len(order[i]):
                p = per_item[i][order[i][round_]]
                chosen.add((p.item_id, p.template_id))
    return [p for p in everything if (p.item_id, p.template_id) in chosen]


@contextmanager
def padding_side(tokenizer, side: str) -> Iterator[None]:
    """Temporarily set ``tokenizer.padding_side`` (generation needs left padding); restored in finally."""
    old = tokenizer.padding_side
    tokenizer.padding_side = side
    try:
        yield
    finally:
        tokenizer.padding_side = old


def _eos_ids(handle: ModelHandle) -> list[int]:
    eos = handle.model.generation_config.eos_token_id
    if eos is None:
        eos = handle.tokenizer.eos_token_id
    return sorted({int(e) for e in (eos if isinstance(eos, (list, tuple)) else [eos]) if e is not None})


def _positions(mask: torch.Tensor) -> torch.Tensor:
    """Position ids 0.. along the real tokens (left or right padding alike)."""
    return (mask.cumsum(-1) - 1).clamp(min=0)


@torch.inference_mode()
def greedy_generate(handle: ModelHandle, input_ids: torch.Tensor, attention_mask: torch.Tensor, max_new_tokens: int,
                    use_cache: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """Greedy answers for a LEFT-padded batch: ``(answer_ids (B, A), answer_mask (B, A))``.

    An answer runs up to and including its first EOS token (or ``max_new_tokens`` tokens); positions
    after it are padding (mask 0). A = the longest answer in the batch (>= 1).
    """
    eos = _eos_ids(handle)
    pad = handle.tokenizer.pad_token_id
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*generation flags are not valid.*")
        out = handle.model.generate(input_ids=input_ids, attention_mask=attention_mask, max_new_tokens=max_new_tokens,
                                    do_sample=False, num_beams=1, temperature=None, top_p=None,
                                    top_k=None, pad_token_id=pad, eos_token_id=eos or None, use_cache=use_cache)
    new = out[:, input_ids.shape[1]:]  # (B, A')
    is_eos = torch.isin(new, torch.tensor(eos, device=new.device)) if eos else torch.zeros_like(new, dtype=torch.bool)
    # a token belongs to the answer if no EOS came strictly before it
    before = torch.cumsum(is_eos.long(), dim=1) - is_eos.long()
    mask = (before == 0).long()
    length = int(mask.sum(1).max())
    return new[:, :length], mask[:, :length]


@torch.inference_mode()
def answer_logprobs(handle: ModelHandle, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                    answer_ids: torch.Tensor, answer_mask: torch.Tensor, last_only: bool = False) -> torch.Tensor:
    """Teacher-forced log-probabilities (B, A, V), float32, of every vocabulary entry at each answer step.

    Row b, step t is log p(· | prompt_b, answer_b[:t]). The prompt batch must be LEFT-padded (so all
    answers start at the same column); one forward of prompt + answer (minus its last token) with the
    LM head applied only to the last A positions (``logits_to_keep``), so soft-capping (Gemma 2) and
    any other head logic of the model are included. ``last_only``: the last answer step only, (B, 1, V).
    """
    n_answer = answer_ids.shape[1]
    ids = torch.cat([input_ids, answer_ids], dim=1)[:, :-1]
    mask = torch.cat([attention_mask, answer_mask.to(attention_mask.dtype)], dim=1)[:, :-1]
    keep = 1 if last_only else n_answer
    out = handle.model(input_ids=ids, attention_mask=mask, position_ids=_positions(mask), use_cache=False,
                       logits_to_keep=keep)
    return out.logits[:, -keep:].float().log_softmax(-1)


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
    model's own logits at the last step. For each block the
    caller holds :func:`ablate_layer` and calls :meth:`lesion`; :meth:`results` then gives every lesion's
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
                 answer_ids: torch.Tensor, answer_mask: torch.Tensor, as_tuple: bool,
                 head: tuple[torch.Tensor, torch.Tensor | None] | None = None, fast: bool = True) -> None:
        from medinterp.methods.patching_engine import _record

        self.handle, self.answer_ids, self.answer_mask, self.as_tuple = handle, answer_ids, answer_mask, as_tuple
        self.fast = fast
        self.args = (input_ids, attention_mask, answer_ids, answer_mask)
        self.pending: list[torch.Tensor | tuple[np.ndarray, np.ndarray]] = []
        parts, n_answer = handle.parts, answer_ids.shape[1]
        self.head = head if fast else None
        outputs: dict[Any, torch.Tensor] = {}
        hooks = [(b, _record(outputs, j, {})) for j, b in enumerate(parts.layers)]
        with forward_hooks([*hooks, (parts.final_norm, _record(outputs, "norm", {}))]):
            # the model's own head: at every answer step for the plain path; at the last step only (the guard
            # below) when the fast path computes the intact logits itself
            own = answer_logprobs(handle, *self.args, last_only=self.head is not None)  # (B, A or 1, V)
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
                self.logp_clean = answer_logprobs(handle, *self.args)
                return
            p = logp.exp_()
            self.p_mass = p.sum(-1).double()                                        # Σ_v p_v, (B, A)
            self.u = torch.einsum("bav,vd->bad", p, weight.float()).double()       # Σ_v p_v W_v, (B, A, D)
            self.w_answer = weight[answer_ids].double()                            # W_a, (B, A, D)
        self.logp_clean = None  # the fast path does not keep (B, A, V) log-probs

    @torch.inference_mode()
    def lesion(self, block: int) -> None:
        """Run the lesioned pass for ``block`` (the caller holds :func:`ablate_layer` for it)."""
        from medinterp.methods.patching_engine import skip_blocks

        replayed = self.block_outputs[:block] if self.fast else []
        with skip_blocks(self.handle.parts.layers, replayed, self.as_tuple):
            if self.head is None:
                self.pending.append(token_metrics(self.logp_clean, answer_logprobs(self.handle, *self.args),
                                                  self.answer_ids, self.answer_mask))
            else:
                self.pending.append(answer_hidden(self.handle, *self.args))  # (B, A, D), after the final norm

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
        """Per-prompt (kl, dlogp), each (B,), of one lesion (the caller holds :func:`ablate_layer`)."""
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
    with :func:`medinterp.capture.params.full_weights` (a collective: every rank calls this in the same
    place) into a private copy: one head per rank (Llama-3.3-70B: 2.1 GB in bf16). An ordinary head is
    returned as it is, not copied.
    """
    from medinterp.capture.params import full_weights, is_partitioned

    head = handle.parts.lm_head
    config = handle.model.config
    config = config.get_text_config() if hasattr(config, "get_text_config") else config
    if type(head) is not nn.Linear or getattr(config, "final_logit_softcapping", None):
        return None
    if not (is_partitioned(head) or head.weight.device.type == "meta"):
        return head.weight, head.bias
    with full_weights(head):
        weight = head.weight.detach().clone()
        bias = head.bias.detach().clone() if head.bias is not None else None
    return weight, bias


@torch.inference_mode()
def answer_hidden(handle: ModelHandle, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                  answer_ids: torch.Tensor, answer_mask: torch.Tensor) -> torch.Tensor:
    """Final-normed hidden states (B, A, D) that predict each answer token: the LM head's input in
    :func:`answer_logprobs`, from the backbone alone (same inputs, no head)."""
    from medinterp.capture import output_tensor

    n_answer = answer_ids.shape[1]
    ids = torch.cat([input_ids, answer_ids], dim=1)[:, :-1]
    mask = torch.cat([attention_mask, answer_mask.to(attention_mask.dtype)], dim=1)[:, :-1]
    out = handle.parts.backbone(input_ids=ids, attention_mask=mask, position_ids=_positions(mask), use_cache=False)
    hidden = output_tensor(out.last_hidden_state if hasattr(out, "last_hidden_state") else out)
    return hidden[:, -n_answer:]


def decode_answers(tokenizer, answer_ids: torch.Tensor, answer_mask: torch.Tensor) -> list[str]:
    """Answer texts without special tokens (EOS, padding)."""
    return [tokenizer.decode(ids[m.bool()].tolist(), skip_special_tokens=True) for ids, m in zip(answer_ids, answer_mask)]


# ---------------------------------------------------------------------------------------------------
# Statistics
# ---------------------------------------------------------------------------------------------------
def _mean_ci(x: np.ndarray, n_boot: int, seed: int) -> Estimate:
    """Mean with a bootstrap CI over the finite values; NaN CI below 2 values, all-NaN below 1."""
    x = np.asarray(x, dtype=np.float64)
    x = x[np.isfinite(x)]
    if len(x) >= 2:
        return mean_with_ci(x, n_boot=n_boot, seed=seed)
    return Estimate(float(x[0]) if len(x) else math.nan, math.nan, math.nan, len(x))


def spearman(x: np.ndarray, y: np.ndarray) -> tuple[float, int]:
    """Spearman's rho over the pairs where both are finite (``scipy.stats.spearmanr``), and the pair count.

    NaN when fewer than 3 pairs or either side is constant.
    """
    from scipy.stats import spearmanr

    x, y = np.asarray(x, dtype=np.float64).ravel(), np.asarray(y, dtype=np.float64).ravel()
    ok = np.isfinite(x) & np.isfinite(y)
    n = int(ok.sum())
    if n < 3 or np.ptp(x[ok]) == 0 or np.ptp(y[ok]) == 0:
        return math.nan, n
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return float(spearmanr(x[ok], y[ok]).statistic), n


def _not_rank_zero() -> bool:
    """True on the ranks other than 0 of a process group (their progress bars stay off)."""
    return torch.distributed.is_available() and torch.distributed.is_initialized() and torch.distributed.get_rank() != 0


def _constant(value: float, n: int) -> Estimate:
    return Estimate(float(value), math.nan, math.nan, int(n))


def _unsent_note(n: int) -> str:
    return f"no item sent to the judge: all {n} lesioned answers equal the intact ones"


@dataclass(frozen=True)
class JudgeCoverage:
    """Per block: the items sent to the judge (``asked``: not settled unsent) and those it answered."""

    layers: np.ndarray  # (K,) read-out layers (block + 1)
    sent: np.ndarray  # (K,) int
    answered: np.ndarray  # (K,) int

    @property
    def fraction(self) -> np.ndarray:
        """answered / sent per block; 1 where nothing was sent (nothing went unanswered)."""
        return np.where(self.sent > 0, self.answered / np.maximum(self.sent, 1), 1.0)

    def withheld(self, threshold: float) -> np.ndarray:
        """Per block: True where items were sent and the judge answered less than ``threshold`` of them."""
        return (self.sent > 0) & (self.fraction < threshold)

    @classmethod
    def of(cls, verdicts: Sequence[Verdict], blocks: Sequence[int], n: int) -> JudgeCoverage:
        """From block-major verdicts (block k's ``n`` items at ``k*n .. k*n + n - 1``)."""
        asked = np.array([v.asked for v in verdicts], dtype=bool).reshape(len(blocks), n)
        ok = np.array([not v.missing for v in verdicts], dtype=bool).reshape(len(blocks), n)
        return cls(np.asarray(blocks) + 1, asked.sum(1), (asked & ok).sum(1))


# ---------------------------------------------------------------------------------------------------
# The method
# ---------------------------------------------------------------------------------------------------
@dataclass
class AblationWork:
    """What :meth:`LayerAblation.prepare` decides: the prompts, the blocks, the batches and the LM head."""

    prompts: list[Prompt]
    texts: list[str]
    blocks: list[int]
    batches: list[np.ndarray]  # prompt indices per batch, length-sorted
    head: tuple[torch.Tensor, torch.Tensor | None] | None  # the fast scorer's (W, b); None: the model's own head
    as_tuple: list[bool] | None = None  # per block, whether it returns a tuple (seen in the first batch)

    @property
    def n_units(self) -> int:
        return len(self.batches)


@register_method("ablation")
@dataclass(frozen=True)
class LayerAblation(Method):
    """Per-block ablation with KL, Δlog p and a judge. Settings are fixed at construction.

    ``max_new_tokens`` defaults to 8 to keep the CPU default map short; the paper generated 64 tokens on GPUs.
    ``fast`` turns on the exact shortcuts of :class:`LesionScorer` (False: the plain reference computation).
    ``judge`` is an object from :func:`medinterp.judges.make_judge` (the runner builds it from
    ``conf/judge/<name>.yaml``); None means the deterministic judge. ``layers`` are block indices
    (0..n_layers-1, negatives count from the end); None ablates every block.
    """

    max_prompts: int | None = 32
    max_new_tokens: int = 8
    batch_size: int = 32
    n_boot: int = 200
    seed: int = 0
    layers: tuple[int, ...] | None = None
    judge: Any = None
    fast: bool = True
    min_judge_coverage: float = 0.8  # a block's judge_score is NaN when the judge answered less of what it was sent
    max_batch_tokens: int | None = DEFAULT_MAX_BATCH_TOKENS  # padded prompt + answer tokens per batch (None: no cap)

    def __post_init__(self) -> None:
        for name, low, optional in (("max_prompts", 1, True), ("max_new_tokens", 1, False), ("batch_size", 1, False),
                                    ("n_boot", 1, False)):
            value = getattr(self, name)
            if optional and value is None:
                continue
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise MedinterpError(f"ablation method: {name} must be an int >= {low}"
                                     f"{' or null' if optional else ''}; got {value!r}")
        check_positive_int("max_batch_tokens", self.max_batch_tokens, allow_none=True)
        if self.layers is not None:
            layers = [self.layers] if isinstance(self.layers, int) else list(self.layers)
            if not layers or any(isinstance(v, bool) or not isinstance(v, int) for v in layers):
                raise MedinterpError(f"ablation method: layers must be null or a non-empty list of block indices; "
                                     f"got {self.layers!r}")
            object.__setattr__(self, "layers", tuple(layers))
        cover = self.min_judge_coverage
        if isinstance(cover, bool) or not isinstance(cover, (int, float)) or not 0 <= cover <= 1:
            raise MedinterpError(f"ablation method: min_judge_coverage must be a number in [0, 1]; got {cover!r}")
        if self.judge is None:
            object.__setattr__(self, "judge", DeterministicJudge())
        elif not (hasattr(self.judge, "score") and hasattr(self.judge, "needs_text")):
            raise MedinterpError(f"ablation method: judge must be a judge object (medinterp.judges.make_judge); "
                                 f"got {type(self.judge).__name__} {self.judge!r}")

    def blocks(self, n_layers: int) -> list[int]:
        """The block indices to ablate for a model with ``n_layers`` blocks (checked, de-duplicated, sorted)."""
        if self.layers is None:
            return list(range(n_layers))
        bad = [v for v in self.layers if not -n_layers <= v < n_layers]
        if bad:
            raise MedinterpError(f"ablation method: layers {bad} out of range for a model with {n_layers} blocks; "
                                 f"valid: 0..{n_layers - 1}")
        return sorted({v % n_layers for v in self.layers})

    def prepare(self, cell: Cell) -> AblationWork:
        """The prompts, cut into length-sorted batches, and the LM head the fast scorer reads (every rank)."""
        handle, prompt_set, templates = cell.handle, cell.prompt_set, cell.templates
        blocks = self.blocks(handle.n_layers)
        prompts = select_prompts(prompt_set, templates, self.max_prompts, self.seed)
        if not prompts:
            raise MedinterpError(f"ablation method: no prompts for domain {prompt_set.domain!r} "
                                 f"and templates {list(templates)}")
        texts = [p.text for p in prompts]
        # similar lengths share a batch (less padding); every prompt plus its answer must fit the context
        batches = prompt_batches(handle, texts, self.batch_size, self.max_batch_tokens, prompt_names(prompts),
                                 extra_tokens=self.max_new_tokens)
        return AblationWork(prompts, texts, blocks, batches, lesion_head(handle) if self.fast else None)

    def run_unit(self, handle: ModelHandle, work: AblationWork, i: int) -> dict[str, Any]:
        """Batch ``i``: its intact answers and, per block, each prompt's KL, Δlog p (and lesioned answer)."""
        idx, blocks = work.batches[i], work.blocks
        needs_text = bool(self.judge.needs_text)
        ablated: list[list[str | None]] = [[None] * len(idx) for _ in blocks]
        with memory_errors("method.batch_size", self.batch_size, handle.device, prefix="ablation method: ",
                           detail="; the log-probs are (batch, answer, vocab) float32"), \
                padding_side(handle.tokenizer, "left"):
            enc = handle.tokenizer([work.texts[j] for j in idx], padding=True, return_tensors="pt").to(handle.device)
            ids, mask = enc["input_ids"], enc["attention_mask"]
            work.as_tuple = work.as_tuple or block_returns_tuple(handle, ids, mask)
            ans, ans_mask = greedy_generate(handle, ids, mask, self.max_new_tokens)
            scorer = LesionScorer(handle, ids, mask, ans, ans_mask, work.as_tuple[0], work.head, self.fast)
            bar = tqdm(blocks, desc=f"ablation batch {i + 1}/{work.n_units}", unit="block", leave=False,
                       disable=_not_rank_zero())
            for k, block in enumerate(bar):
                with ablate_layer(handle.parts, block, returns_tuple=work.as_tuple[block]):
                    scorer.lesion(block)
                    if needs_text:
                        a_ids, a_mask = greedy_generate(handle, ids, mask, self.max_new_tokens)
                        ablated[k] = decode_answers(handle.tokenizer, a_ids, a_mask)
            kl, dlogp = scorer.results()
        return {"idx": np.asarray(idx), "kl": kl, "dlogp": dlogp, "ablated": ablated,
                "clean": decode_answers(handle.tokenizer, ans, ans_mask), "answer_tokens": ans_mask.sum(1).cpu().numpy()}

    def finish(self, handle: ModelHandle, work: AblationWork, results: Sequence[dict[str, Any]]) -> MethodResult:
        """The judge's verdicts and the statistics over every batch's result (rank 0)."""
        prompts, blocks, texts, n = work.prompts, work.blocks, work.texts, len(work.prompts)
        kl, dlogp = np.full((len(blocks), n), np.nan), np.full((len(blocks), n), np.nan)
        clean: list[str] = [""] * n
        ablated: list[list[str | None]] = [[None] * n for _ in blocks]
        answer_tokens = np.zeros(n, dtype=int)
        for r in results:
            idx = r["idx"]
            kl[:, idx], dlogp[:, idx], answer_tokens[idx] = r["kl"], r["dlogp"], r["answer_tokens"]
            for j, i in enumerate(idx):
                clean[i] = r["clean"][j]
                for k in range(len(blocks)):
                    ablated[k][i] = r["ablated"][k][j]
        items = [JudgeItem(texts[i], clean[i], ablated[k][i], float(kl[k, i]), float(dlogp[k, i]))
                 for k in range(len(blocks)) for i in range(n)]
        verdicts = self.judge.score(items)
        assert len(verdicts) == len(items), (len(verdicts), len(items))
        scores = np.array([v.value for v in verdicts]).reshape(len(blocks), n)
        cover = JudgeCoverage.of(verdicts, blocks, n)
        return MethodResult(self._measurements(blocks, kl, dlogp, scores, cover, bool(self.judge.needs_text)),
                            artifacts={"summary": self._summary(prompts, blocks, kl, scores, verdicts, answer_tokens,
                                                                cover),
                                       "ablation_items": self._item_records(prompts, blocks, items, verdicts)},
                            items=self._item_values(prompts, blocks, kl, dlogp, scores, verdicts))

    # -- pieces ----------------------------------------------------------------------------------------
    def _judge_score(self, scores: np.ndarray, cover: JudgeCoverage, k: int) -> Measurement:
        """Block ``k``'s judge_score: the mean with CI, or NaN when the judge answered too little of it."""
        layer, sent, answered = cover.layers[k], int(cover.sent[k]), int(cover.answered[k])
        if cover.withheld(self.min_judge_coverage)[k]:
            note = (f"judge coverage {cover.fraction[k]:.2f} < {self.min_judge_coverage:.2f} "
                    f"({answered} of {sent} sent items answered)")
            return Measurement("all", "judge_score", layer, Estimate(math.nan, math.nan, math.nan, answered), note)
        return Measurement("all", "judge_score", layer, _mean_ci(scores[k], self.n_boot, self.seed),
                           "" if sent else _unsent_note(scores.shape[1]))

    def _measurements(self, blocks: list[int], kl: np.ndarray, dlogp: np.ndarray, scores: np.ndarray,
                      cover: JudgeCoverage, llm: bool) -> list[Measurement]:
        out = []
        n = kl.shape[1]
        for k, block in enumerate(blocks):
            layer = block + 1  # block b is reported at read-out b + 1 (methods/base.py)
            out.append(Measurement("all", "kl", layer, _mean_ci(kl[k], self.n_boot, self.seed)))
            out.append(Measurement("all", "dlogp", layer, _mean_ci(dlogp[k], self.n_boot, self.seed)))
            out.append(self._judge_score(scores, cover, k))
            if llm:
                out.append(Measurement("all", "judge_missing", layer, _constant(np.isnan(scores[k]).sum(), n)))
                out.append(Measurement("all", "judge_coverage", layer, _constant(cover.fraction[k], cover.sent[k]),
                                       "" if cover.sent[k] else _unsent_note(n)))
                rho, pairs = spearman(kl[k], scores[k])
                out.append(Measurement("all", "judge_agreement", layer, _constant(rho, pairs)))
        return out

    def _summary(self, prompts: list[Prompt], blocks: list[int], kl: np.ndarray, scores: np.ndarray,
                 verdicts: list[Verdict], answer_tokens: np.ndarray, cover: JudgeCoverage) -> dict[str, Any]:
        judge = self.judge
        missing = [v.missing_reason or "" for v in verdicts if v.missing]
        withheld = cover.layers[cover.withheld(self.min_judge_coverage)].tolist()
        sent, answered = int(cover.sent.sum()), int(cover.answered.sum())
        degraded = answered < sent
        summary: dict[str, Any] = {
            "n_prompts": len(prompts), "blocks": blocks, "max_new_tokens": self.max_new_tokens,
            "mean_answer_tokens": float(answer_tokens.mean()), "judge": getattr(judge, "name", type(judge).__name__),
            "judge_items": len(verdicts), "judge_missing": len(missing),
            "judge_missing_reasons": dict(Counter(missing).most_common(5)),
            "judge_cached": sum(v.cached for v in verdicts),
            "judge_sent": sent, "judge_answered": answered,
            "judge_coverage": {str(layer): float(f) for layer, f in zip(cover.layers, cover.fraction)},
            "min_judge_coverage": float(self.min_judge_coverage), "judge_withheld_layers": withheld,
            "degraded": degraded,
            "generation": "greedy, KV cache (the skipped block's layer gets placeholder keys/values)",
        }
        if degraded:  # the runner logs these last (runners/map.py)
            summary["warnings"] = [f"judge answered {answered}/{sent} items (coverage {answered / sent:.2f}); "
                                   f"judge_score is NaN for {len(withheld)} of {len(blocks)} layers"]
        if judge.needs_text:
            rho, pairs = spearman(kl, scores)
            summary.update(rubric_version=getattr(judge, "rubric_version", None),
                           judge_model=getattr(judge, "cache_model", None), judge_agreement=rho,
                           judge_agreement_pairs=pairs)
        return summary

    @staticmethod
    def _item_values(prompts: list[Prompt], blocks: list[int], kl: np.ndarray, dlogp: np.ndarray, scores: np.ndarray,
                     verdicts: list[Verdict]) -> list[ItemValue]:
        """Per (ablated block, prompt): ``kl``, ``dlogp`` and ``judge_score`` (per_item.csv). A prompt the judge
        gave no score carries the verdict's reason as its note (the row's mean is over the scored prompts)."""
        out, n = [], len(prompts)
        for k, block in enumerate(blocks):
            for i, p in enumerate(prompts):
                layer, verdict = block + 1, verdicts[k * n + i]
                note = "" if np.isfinite(scores[k, i]) else f"no judge score: {verdict.missing_reason or 'missing'}"
                out += [ItemValue("all", "kl", layer, p.item_id, p.template_id, float(kl[k, i])),
                        ItemValue("all", "dlogp", layer, p.item_id, p.template_id, float(dlogp[k, i])),
                        ItemValue("all", "judge_score", layer, p.item_id, p.template_id, float(scores[k, i]), note)]
        return out

    @staticmethod
    def _item_records(prompts: list[Prompt], blocks: list[int], items: list[JudgeItem],
                      verdicts: list[Verdict]) -> list[dict[str, Any]]:
        """One JSON-able record per (block, prompt): answers, metrics and the verdict (for inspection)."""
        n = len(prompts)
        return [{"layer": blocks[k // n] + 1, "item_id": prompts[k % n].item_id, "template_id": prompts[k % n].template_id,
                 "clean_answer": it.clean_answer, "ablated_answer": it.ablated_answer, "kl": it.kl, "dlogp": it.dlogp,
                 "score": v.score, "rationale": v.rationale, "missing_reason": v.missing_reason}
                for k, (it, v) in enumerate(zip(items, verdicts))]
