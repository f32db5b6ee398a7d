"""Tokenize prompts into a batch that knows which tokens to read: the last one, the prompt, or the term.

Token reductions (``reduction=``):
- ``last`` (default): the last real token of each prompt, wherever padding puts it;
- ``mean``: the mean over the prompt's real tokens, special tokens (BOS) excluded — the BOS position
  is an attention sink with an outsized norm that would dominate any mean;
- ``term``: the mean over the tokens of the term itself (the drug, symptom, age, ...), found from the
  tokenizer's character offsets and the term's character span in the prompt.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from transformers import PreTrainedTokenizerBase

from medinterp.errors import MedinterpError, unknown_choice

REDUCTIONS = ("last", "mean", "term")


@dataclass
class TokenBatch:
    """Model inputs plus, per row, the index of the last real token and a (B, T) pooling weight."""

    input_ids: torch.Tensor  # (B, T)
    attention_mask: torch.Tensor  # (B, T), 1 = real token
    position_ids: torch.Tensor  # (B, T), 0.. along the real tokens, whatever the padding side
    last_index: torch.Tensor  # (B,)
    pool_weight: torch.Tensor  # (B, T), rows sum to 1 over the tokens that ``mean``/``term`` average

    def to(self, device: torch.device) -> TokenBatch:
        return TokenBatch(*(t.to(device) for t in (self.input_ids, self.attention_mask, self.position_ids,
                                                    self.last_index, self.pool_weight)))

    def rows(self, index: torch.Tensor) -> TokenBatch:
        """The batch of rows ``index`` (same padding and length)."""
        return TokenBatch(*(t[index] for t in (self.input_ids, self.attention_mask, self.position_ids,
                                               self.last_index, self.pool_weight)))

    def model_inputs(self) -> dict[str, torch.Tensor]:
        return {"input_ids": self.input_ids, "attention_mask": self.attention_mask, "position_ids": self.position_ids}


def position_ids(mask: torch.Tensor) -> torch.Tensor:
    """Position ids 0.. along the real tokens of an attention mask (B, T), left or right padding alike.

    Padding positions get 0 (never read); a prompt's positions are thus the same padded or alone."""
    return (mask.cumsum(-1) - 1).clamp(min=0)


def encode(tokenizer: PreTrainedTokenizerBase, texts: Sequence[str], reduction: str = "last",
           term_spans: Sequence[tuple[int, int]] | None = None) -> TokenBatch:
    """Tokenize ``texts`` with padding on the tokenizer's side and build the reduction's read-out."""
    if reduction not in REDUCTIONS:
        raise unknown_choice("reduction", reduction, REDUCTIONS)
    if reduction == "term" and term_spans is None:
        raise MedinterpError("reduction 'term' needs the term's character span for every prompt")
    enc = tokenizer(list(texts), padding=True, return_tensors="pt", return_offsets_mapping=reduction == "term",
                    return_special_tokens_mask=True)
    mask = enc["attention_mask"]
    positions = position_ids(mask)
    # The last real token: the highest index whose mask is 1 (left or right padding alike).
    last = (mask * torch.arange(mask.shape[1])).argmax(-1)
    if reduction == "term":
        offsets = enc["offset_mapping"]  # (B, T, 2) character spans; (0, 0) for special/pad tokens
        spans = torch.tensor(term_spans)  # (B, 2)
        start, end = spans[:, :1], spans[:, 1:]
        weight = ((offsets[..., 0] < end) & (offsets[..., 1] > start) & (offsets[..., 1] > offsets[..., 0])).float()
        weight = weight * mask
    else:
        weight = (mask * (1 - enc["special_tokens_mask"])).float()
    counts = weight.sum(-1, keepdim=True)
    if (counts == 0).any():
        bad = int((counts == 0).nonzero()[0, 0])
        raise MedinterpError(f"no tokens to pool for reduction {reduction!r} in prompt {texts[bad]!r}")
    return TokenBatch(enc["input_ids"], mask, positions, last, weight / counts)


def reduce_tokens(hidden: torch.Tensor, batch: TokenBatch, reduction: str) -> torch.Tensor:
    """(B, T, D) hidden states → (B, D) according to ``reduction``."""
    if reduction == "last":
        return hidden[torch.arange(hidden.shape[0], device=hidden.device), batch.last_index]
    return torch.einsum("btd,bt->bd", hidden, batch.pool_weight.to(hidden.dtype))
