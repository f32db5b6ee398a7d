"""Greedy answers and teacher-forced log-probabilities: what the ablation method compares.

The intact model answers each prompt greedily (left padding, ``do_sample=False``); a lesioned model is
then scored on the intact answer by teacher forcing (:func:`answer_logprobs`, the model's own head, or
:func:`answer_hidden`, the backbone's final hidden states for the fast scorer in
:mod:`medinterp.methods.ablation.lesion`). Position ids come from the attention mask
(:func:`medinterp.capture.tokens.position_ids`), so left padding does not shift them.

Image prompts (a vision-language model) pass the processor's other inputs as ``extra`` (``pixel_values``,
Gemma 3's ``token_type_ids``): the model's own forward reads them, :func:`answer_hidden` then runs the
multimodal backbone (vision tower, projector, language model), and ``token_type_ids`` are extended with text
(0) over the appended answer tokens.
"""
from __future__ import annotations

import warnings

import torch

from medinterp.capture.tokens import position_ids
from medinterp.hooks import output_tensor
from medinterp.models import ModelHandle


def _eos_ids(handle: ModelHandle) -> list[int]:
    eos = handle.model.generation_config.eos_token_id
    if eos is None:
        eos = handle.tokenizer.eos_token_id
    return sorted({int(e) for e in (eos if isinstance(eos, (list, tuple)) else [eos]) if e is not None})


@torch.inference_mode()
def greedy_generate(handle: ModelHandle, input_ids: torch.Tensor, attention_mask: torch.Tensor, max_new_tokens: int,
                    use_cache: bool = True, extra: dict[str, torch.Tensor] | None = None
                    ) -> tuple[torch.Tensor, torch.Tensor]:
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
                                    top_k=None, pad_token_id=pad, eos_token_id=eos or None, use_cache=use_cache,
                                    **(extra or {}))
    new = out[:, input_ids.shape[1]:]  # (B, A')
    is_eos = torch.isin(new, torch.tensor(eos, device=new.device)) if eos else torch.zeros_like(new, dtype=torch.bool)
    # a token belongs to the answer if no EOS came strictly before it
    before = torch.cumsum(is_eos.long(), dim=1) - is_eos.long()
    mask = (before == 0).long()
    length = int(mask.sum(1).max())
    return new[:, :length], mask[:, :length]


@torch.inference_mode()
def answer_logprobs(handle: ModelHandle, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                    answer_ids: torch.Tensor, answer_mask: torch.Tensor, last_only: bool = False,
                    extra: dict[str, torch.Tensor] | None = None) -> torch.Tensor:
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
    out = handle.model(input_ids=ids, attention_mask=mask, position_ids=position_ids(mask), use_cache=False,
                       logits_to_keep=keep, **_extended(extra, ids.shape[1]))
    return out.logits[:, -keep:].float().log_softmax(-1)


@torch.inference_mode()
def answer_hidden(handle: ModelHandle, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                  answer_ids: torch.Tensor, answer_mask: torch.Tensor,
                  extra: dict[str, torch.Tensor] | None = None) -> torch.Tensor:
    """Final-normed hidden states (B, A, D) that predict each answer token: the LM head's input in
    :func:`answer_logprobs`, from the backbone alone (same inputs, no head)."""
    n_answer = answer_ids.shape[1]
    ids = torch.cat([input_ids, answer_ids], dim=1)[:, :-1]
    mask = torch.cat([attention_mask, answer_mask.to(attention_mask.dtype)], dim=1)[:, :-1]
    backbone = handle.parts.vision.backbone if extra and "pixel_values" in extra else handle.parts.backbone
    out = backbone(input_ids=ids, attention_mask=mask, position_ids=position_ids(mask), use_cache=False,
                   **_extended(extra, ids.shape[1]))
    hidden = output_tensor(out.last_hidden_state if hasattr(out, "last_hidden_state") else out)
    return hidden[:, -n_answer:]


def _extended(extra: dict[str, torch.Tensor] | None, length: int) -> dict[str, torch.Tensor]:
    """``extra`` for a sequence of ``length`` tokens: ``token_type_ids`` (B, T0) padded with text (0) on the right."""
    out = dict(extra or {})
    types = out.get("token_type_ids")
    if types is not None:
        out["token_type_ids"] = torch.nn.functional.pad(types, (0, length - types.shape[1]))[:, :length]
    return out


def decode_answers(tokenizer, answer_ids: torch.Tensor, answer_mask: torch.Tensor) -> list[str]:
    """Answer texts without special tokens (EOS, padding)."""
    return [tokenizer.decode(ids[m.bool()].tolist(), skip_special_tokens=True) for ids, m in zip(answer_ids, answer_mask)]
