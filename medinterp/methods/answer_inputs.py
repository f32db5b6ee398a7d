"""Prompts with their answers, teacher-forced: the shared inputs of ``neurons``, ``image_lens`` and ``gradcam``.

One :class:`AnswerExample` per (item, template):

- an **image set** (docs/multimodal-data.md): the question is ``prompt.question`` (the text without
  ``<image>``), rendered by the processor path (medinterp/models/processor.py ``render_prompt``: the chat
  template places the image); the answer is the item's reference answer for the template (``answers``), or
  none;
- a **text set**: the template text before the term is the prompt and the term is the answer
  (medinterp/methods/targets.py, the saliency rule: "The patient was started on" -> " metoprolol"), so
  ``neurons`` finds knowledge neurons of the six domains' facts.

``words`` are the item's label words: every class name of its categorical/ordinal labels split into
lower-case words (``left``, ``upper``, ``present``; a drug's ``cardiology``), plus the answer's words; a
decoded token *hits* when, stripped of spaces and the tokenizers' word markers and lower-cased, it has at
least 3 letters and equals a label word or begins one (``card`` hits ``cardiology``).

:func:`encode` tokenizes ``rendered prompt + separator + answer`` (right padding, so position ids need no
correction) and locates, per row, the **question position** ``q`` (the last prompt token: what the model
reads before generating) and the ``A`` answer tokens, predicted at positions ``q .. q + A - 1``. The
separator is one space when the rendered prompt ends without whitespace (``ASSISTANT:`` -> ``ASSISTANT: yes``),
else nothing (``<start_of_turn>model\\n`` -> ``...\\nyes``). Answer tokens are counted as the tokens the full
text has beyond the prompt's own; when the tokenizer merges across that boundary the row has no answer
tokens (``n_answer = 0``) and a method reports it in its notes.
"""
from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from medinterp.errors import MedinterpError, unknown_choice
from medinterp.hooks import forward_pre_hooks
from medinterp.methods.targets import saliency_examples, select_examples
from medinterp.models import ModelHandle
from medinterp.models.padding import padding_side
from medinterp.prompts import PromptSet, load_image

TOKEN_SETS = ("image", "text", "all")  # the positions a method reads (tokens=...)
_WORD = re.compile(r"[a-z]+")
_MARKERS = "Ġ▁ \n\t"  # byte-level BPE and SentencePiece word markers


@dataclass(frozen=True)
class AnswerExample:
    """One (item, template): the model reads ``question`` (with ``image``, if any) and is scored on ``answer``."""

    item_id: str
    template_id: str
    question: str
    answer: str = ""  # "" when the item has no reference answer for the template
    image: str = ""  # image sets: the image's path
    box: tuple[float, float, float, float] | None = None
    words: frozenset[str] = field(default_factory=frozenset)


def label_words(texts: Sequence[str]) -> frozenset[str]:
    """Lower-case alphabetic words (>= 3 letters) of ``texts``."""
    return frozenset(w for t in texts for w in _WORD.findall(str(t).lower()) if len(w) >= 3)


def token_hits(token: str, words: frozenset[str]) -> bool:
    """Whether a decoded token is a label word or the beginning of one (module docstring)."""
    t = token.strip(_MARKERS).lower()
    return len(t) >= 3 and t.isalpha() and any(w.startswith(t) for w in words)


def cell_examples(prompt_set: PromptSet, templates: Sequence[str], max_prompts: int | None,
                  seed: int) -> list[AnswerExample]:
    """Up to ``max_prompts`` examples spread evenly over items and templates (targets.select_examples' rule)."""
    items = {item.id: item for item in prompt_set.items}

    def words(item, answer: str) -> frozenset[str]:
        classes = [v for k, v in item.labels.items() if prompt_set.labelings[k].kind != "numeric"]
        return label_words([*classes, answer])

    per_template: dict[str, list[tuple[AnswerExample, None]]] = {}
    for t in templates:
        if prompt_set.modality == "image":
            rows = [AnswerExample(p.item_id, t, p.question, items[p.item_id].answers.get(t, ""), p.image,
                                  items[p.item_id].box) for p in prompt_set.prompts(t)]
        else:
            rows = [AnswerExample(e.item_id, t, e.prompt, e.target) for e in saliency_examples(prompt_set, t)]
        per_template[t] = [(AnswerExample(r.item_id, t, r.question, r.answer, r.image, r.box,
                                          words(items[r.item_id], r.answer)), None) for r in rows]
    return [ex for ex, _ in select_examples(per_template, max_prompts, seed)]


@dataclass
class AnswerBatch:
    """Model inputs of a batch of examples (right-padded) and where the question and answer tokens are."""

    inputs: dict[str, torch.Tensor]  # input_ids, attention_mask (B, T) [+ pixel_values, token_type_ids]
    token_types: torch.Tensor  # (B, T): 1 image, 0 text, -1 padding
    image_positions: torch.Tensor | None  # (B, n_tokens) each row's image tokens in grid order; None for text
    question: torch.Tensor  # (B,) the last prompt token's position
    n_answer: torch.Tensor  # (B,) answer tokens teacher-forced (0: none)

    def first_answer(self) -> torch.Tensor:
        """(B,) each row's first answer token id (-1 where it has none)."""
        ids = self.inputs["input_ids"]
        nxt = ids[torch.arange(len(ids)), (self.question + 1).clamp(max=ids.shape[1] - 1)]
        return torch.where(self.n_answer > 0, nxt, torch.full_like(nxt, -1))

    def mask(self, tokens: str) -> torch.Tensor:
        """(B, T) bool: the positions of ``tokens`` (``image`` | ``text`` | ``all``, padding never)."""
        if tokens not in TOKEN_SETS:
            raise unknown_choice("tokens", tokens, TOKEN_SETS)
        kind = {"image": 1, "text": 0}.get(tokens)
        return self.token_types >= 0 if kind is None else self.token_types == kind

    def to(self, device: torch.device | str, dtype: torch.dtype | None = None) -> AnswerBatch:
        inputs = {k: v.to(device, dtype) if k == "pixel_values" and dtype else v.to(device) for k, v in self.inputs.items()}
        return AnswerBatch(inputs, self.token_types.to(device), None if self.image_positions is None else
                           self.image_positions.to(device), self.question.to(device), self.n_answer.to(device))


def _n_ids(tokenizer: Any, text: str, add_special: bool) -> list[int]:
    return list(tokenizer(text, add_special_tokens=add_special)["input_ids"])


def _texts(handle: ModelHandle, examples: Sequence[AnswerExample], teacher_force: bool
           ) -> tuple[list[str], list[int], bool]:
    """Each example's rendered text (prompt + separator + answer), its answer-token count and whether the tokenizer
    adds special tokens (module docstring); no image is read."""
    from medinterp.models.processor import render_prompt

    tok = handle.tokenizer
    if any(ex.image for ex in examples) and handle.parts.vision is None:
        raise MedinterpError(f"model {handle.name!r} has no vision tower; image prompt sets need a vision-language "
                             f"model (tiny_llava, tiny_gemma3_vlm, llava15_7b, llava_med_v15_mistral_7b, medgemma_4b)")
    prompts = [render_prompt(handle.processor, ex.question) if ex.image else ex.question for ex in examples]
    bos = getattr(tok, "bos_token", None)
    add_special = not (bos and all(p.startswith(bos) for p in prompts))
    texts, n_answer = [], []
    for prompt, ex in zip(prompts, examples):
        answer = ex.answer if teacher_force else ""
        full = prompt + ("" if not answer or prompt[-1:].isspace() or answer[:1].isspace() else " ") + answer
        head, whole = _n_ids(tok, prompt, add_special), _n_ids(tok, full, add_special)
        ok = whole[:len(head)] == head
        texts.append(full if ok else prompt)
        n_answer.append(len(whole) - len(head) if ok else 0)
    return texts, n_answer, add_special


def answer_lengths(handle: ModelHandle, examples: Sequence[AnswerExample]) -> list[int]:
    """Each example's number of teacher-forced answer tokens (``AnswerBatch.n_answer`` of :func:`encode`), from the
    text alone: a method that must run the same number of passes on every batch (ZeRO-3's lockstep) reads it
    before any batch is encoded."""
    return _texts(handle, examples, True)[1]


def encode(handle: ModelHandle, examples: Sequence[AnswerExample], teacher_force: bool = True) -> AnswerBatch:
    """The batch of ``examples`` for ``handle`` (image prompts through the processor path); ``teacher_force``
    appends each answer (module docstring)."""
    from medinterp.models.processor import image_prompts

    tok, vision = handle.tokenizer, handle.parts.vision
    images = [ex.image for ex in examples]
    texts, n_answer, add_special = _texts(handle, examples, teacher_force)
    with padding_side(tok, "right"):
        if any(images):
            batch = image_prompts(handle.processor, vision, [load_image(p) for p in images], texts)
            inputs, types, positions = batch.inputs, batch.token_types, batch.image_positions[:, 0]
        else:
            enc = tok(texts, padding=True, return_tensors="pt", add_special_tokens=add_special)
            inputs = {"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"]}
            types, positions = torch.where(enc["attention_mask"].bool(), 0, -1), None
    length = inputs["attention_mask"].sum(1)  # (B,) real tokens, all on the left
    answers = torch.tensor(n_answer, dtype=torch.long)
    return AnswerBatch(inputs, types, positions, length - answers - 1, answers)


def _as_leaf(_module: Any, args: tuple, kwargs: dict) -> tuple[tuple, dict] | None:
    """A forward pre-hook on block 0: its input hidden states made a leaf that requires grad when nothing before
    them does (no parameter requires grad: ZeRO-3 turns them off), so the blocks' activations have a graph."""
    hidden = args[0] if args else kwargs["hidden_states"]
    if hidden.requires_grad:
        return None
    leaf = hidden.detach().requires_grad_(True)
    return ((leaf, *args[1:]), kwargs) if args else (args, {**kwargs, "hidden_states": leaf})


def forward(handle: ModelHandle, batch: AnswerBatch, **kwargs: Any) -> Any:
    """The model without its head on ``batch`` (the multimodal backbone for image prompts): an output with
    ``last_hidden_state`` (after the final norm) and, when asked, ``attentions``.

    Under ``torch.enable_grad`` every block's activations are in the autograd graph even when no weight requires
    grad (ZeRO-3 and a frozen model): block 0's input is then made the leaf (:func:`_as_leaf`). Gradients with
    respect to activations (``neurons``, ``gradcam``) are the same either way."""
    backbone = handle.parts.vision.backbone if batch.image_positions is not None else handle.parts.backbone
    hooks = [(handle.parts.layers[0], _as_leaf)] if torch.is_grad_enabled() else []
    with forward_pre_hooks(hooks, with_kwargs=True):
        return backbone(**batch.inputs, use_cache=False, **kwargs)


__all__ = ["AnswerBatch", "AnswerExample", "TOKEN_SETS", "answer_lengths", "cell_examples", "encode", "forward",
           "label_words", "token_hits"]
