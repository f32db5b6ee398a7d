"""What the saliency loss predicts: a prompt and the target text the model should continue it with.

Target rule (the same for every domain, because every packaged domain names its medical term in
``term_slot``):

- the **prompt** is the template text *before* the term slot, rendered with the item's other slots,
  with its trailing whitespace removed;
- the **target** is the term's own text, preceded by that trailing whitespace (usually one space).

So "The patient was started on {drug}." gives ``("The patient was started on", " metoprolol")``, and
"The patient is a {gender} aged {age}." gives ``("The patient is a female aged", " 34")``. Whatever
follows the term (the full stop, a dose, a stage) is not used. The loss then measures how the model
predicts the medical term in its context. A template whose term slot comes first (empty prefix) has
nothing to condition on and is skipped with a logged warning.

Tokenization (:func:`target_tokens`) never tokenizes the target alone: a word tokenizes differently
with and without its leading space or left context. Prompt and target are tokenized together, and the
target is everything after the prompt's own tokens (the prefix token count). If the tokenizer merges
characters across the prompt/target boundary, the prefix is found from character offsets instead; a
token that straddles the boundary makes the example unusable for that tokenizer (skipped, warned).

Contents: :func:`saliency_examples` (text), :func:`target_tokens` / :func:`encode_targets` (tokens),
:func:`select_examples` (which prompts a run uses) and :func:`make_batch` (padded teacher-forcing inputs
with the position that predicts each target token).
"""
from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from transformers import PreTrainedTokenizerBase

from medinterp.capture.tokens import position_ids
from medinterp.prompts import PromptSet
from medinterp.prompts.schema import render

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SaliencyExample:
    """One (item, template): the model reads ``prompt`` and is scored on continuing it with ``target``."""

    item_id: str
    prompt: str
    target: str
    template_id: str = ""


@dataclass(frozen=True)
class TargetTokens:
    """Token ids of ``prompt + target``; ``ids[n_prompt:]`` are the target tokens (at least one)."""

    ids: tuple[int, ...]
    n_prompt: int

    @property
    def n_target(self) -> int:
        return len(self.ids) - self.n_prompt


def split_at_term(text: str, span: tuple[int, int]) -> tuple[str, str]:
    """``(prompt, target)`` of a rendered template whose term occupies ``text[span[0]:span[1]]``.

    The whitespace between the prompt and the term moves to the target (``" metoprolol"``), as a
    tokenizer expects it: most BPE vocabularies attach a leading space to the word that follows.
    """
    before = text[:span[0]]
    prompt = before.rstrip()
    return prompt, before[len(prompt):] + text[span[0]:span[1]]


def saliency_examples(prompt_set: PromptSet, template_id: str) -> list[SaliencyExample]:
    """One example per item for one template, in item order; [] (and a warning) if the term comes first."""
    template = prompt_set.template(template_id)  # unknown ids raise a one-line error listing the valid ones
    examples = []
    for item in prompt_set.items:
        text, span = render(template.text, item.slots, prompt_set.term_slot)
        prompt, target = split_at_term(text, span)
        if not prompt:
            log.warning("saliency: skipping template %r of %r: the term slot {%s} starts the template, so there is "
                        "no prompt to predict it from", template_id, prompt_set.domain, prompt_set.term_slot)
            return []
        examples.append(SaliencyExample(item.id, prompt, target, template.id))
    return examples


def _strip_trailing_specials(ids: list[int], special: list[int]) -> list[int]:
    """Drop special tokens a tokenizer appends (an EOS); leading ones (BOS) stay part of the prompt."""
    end = len(ids)
    while end > 0 and special[end - 1]:
        end -= 1
    return ids[:end]


def target_tokens(tokenizer: PreTrainedTokenizerBase, example: SaliencyExample) -> TargetTokens | None:
    """Tokenize ``prompt + target`` together and locate the target; ``None`` (warned) if it cannot be isolated."""
    full = tokenizer(example.prompt + example.target, return_special_tokens_mask=True)
    alone = tokenizer(example.prompt, return_special_tokens_mask=True)
    ids = _strip_trailing_specials(list(full["input_ids"]), list(full["special_tokens_mask"]))
    prompt_ids = _strip_trailing_specials(list(alone["input_ids"]), list(alone["special_tokens_mask"]))
    n_prompt = len(prompt_ids)
    if ids[:n_prompt] != prompt_ids:  # the boundary merged: count the prompt's tokens by character offset
        n_prompt = _prefix_by_offsets(tokenizer, example)
        if n_prompt is None:
            log.warning("saliency: skipping %r (%s): a token straddles the prompt/target boundary of %r + %r",
                        example.item_id, example.template_id, example.prompt, example.target)
            return None
    if len(ids) <= n_prompt:
        log.warning("saliency: skipping %r (%s): target %r has no tokens of its own", example.item_id,
                    example.template_id, example.target)
        return None
    return TargetTokens(tuple(int(i) for i in ids), n_prompt)


def _prefix_by_offsets(tokenizer: PreTrainedTokenizerBase, example: SaliencyExample) -> int | None:
    """Number of leading tokens of ``prompt + target`` that lie inside the prompt, from character offsets."""
    if not tokenizer.is_fast:
        return None  # slow tokenizers give no offsets
    cut = len(example.prompt)
    enc = tokenizer(example.prompt + example.target, return_offsets_mapping=True, return_special_tokens_mask=True)
    n = 0
    for (start, end), special in zip(enc["offset_mapping"], enc["special_tokens_mask"]):
        if special or (start < cut and end <= cut):  # BOS, or a token wholly inside the prompt
            n += 1
            continue
        return n if start >= cut else None  # the first other token must start at or after the cut
    return n


def encode_targets(tokenizer: PreTrainedTokenizerBase,
                   examples: Sequence[SaliencyExample]) -> list[tuple[SaliencyExample, TargetTokens]]:
    """The examples this tokenizer can score, each with its tokens (unusable ones are dropped with a warning)."""
    out = []
    for example in examples:
        tokens = target_tokens(tokenizer, example)
        if tokens is not None:
            out.append((example, tokens))
    return out


def select_examples(per_template: Mapping[str, Sequence[tuple[SaliencyExample, TargetTokens]]], max_prompts: int | None,
                    seed: int = 0) -> list[tuple[SaliencyExample, TargetTokens]]:
    """Up to ``max_prompts`` examples spread evenly over items and templates (all of them for ``None``).

    Items are put in a seeded random order; pass p takes item i under template (i + p) mod n_templates.
    So the first pass has every item once with templates in rotation, and after n_templates passes every
    (item, template) has been taken exactly once. Combinations a tokenizer could not score are absent.
    """
    templates = [t for t, examples in per_template.items() if examples]  # skipped templates take no turn
    lookup = {(ex.item_id, t): (ex, tok) for t in templates for ex, tok in per_template[t]}
    items = list(dict.fromkeys(ex.item_id for t in templates for ex, _ in per_template[t]))
    order = np.random.default_rng(seed).permutation(len(items))
    chosen = []
    for p in range(len(templates)):
        for i, k in enumerate(order):
            pick = lookup.get((items[k], templates[(i + p) % len(templates)]))
            if pick is not None:
                chosen.append(pick)
    return chosen if max_prompts is None else chosen[:max_prompts]


@dataclass
class Batch:
    """Padded teacher-forcing inputs (``ids[:-1]`` of each prompt + target) and the positions scored.

    ``position_ids`` count real tokens only (as :func:`medinterp.capture.encode` does), so a prompt's
    logits do not depend on the padding side or on the other prompts in the batch.
    """

    input_ids: torch.Tensor  # (B, T)
    attention_mask: torch.Tensor  # (B, T)
    position_ids: torch.Tensor  # (B, T)
    keep: torch.Tensor  # (K,) sequence positions whose logits are needed (union over rows)
    keep_mask: torch.Tensor  # (B, K) True where row b predicts a target token at keep[k]
    rows: torch.Tensor  # (N,) row of each target token
    cols: torch.Tensor  # (N,) its index into ``keep``
    tokens: torch.Tensor  # (N,) the target token id


def make_batch(tokens: Sequence[TargetTokens], pad_id: int, padding_side: str) -> Batch:
    """Pad on ``padding_side`` and locate each target token's predicting position."""
    T = max(len(t.ids) - 1 for t in tokens)
    B = len(tokens)
    ids = torch.full((B, T), pad_id, dtype=torch.long)
    mask = torch.zeros((B, T), dtype=torch.long)
    rows, pos, tok = [], [], []
    for b, t in enumerate(tokens):
        n = len(t.ids) - 1  # the last target token is predicted, never fed
        off = T - n if padding_side == "left" else 0
        ids[b, off:off + n] = torch.tensor(t.ids[:-1])
        mask[b, off:off + n] = 1
        for j in range(t.n_target):  # target token n_prompt + j is predicted at position n_prompt + j − 1
            rows.append(b)
            pos.append(off + t.n_prompt + j - 1)
            tok.append(t.ids[t.n_prompt + j])
    pos_t = torch.tensor(pos)
    keep, cols = torch.unique(pos_t, sorted=True, return_inverse=True)
    keep_mask = torch.zeros((B, len(keep)), dtype=torch.bool)
    keep_mask[torch.tensor(rows), cols] = True
    return Batch(ids, mask, position_ids(mask), keep, keep_mask, torch.tensor(rows), cols,
                 torch.tensor(tok))
