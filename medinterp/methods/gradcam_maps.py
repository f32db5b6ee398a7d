"""Grad-CAM on image patches, per language-model layer (the computation; medinterp/methods/gradcam.py runs it).

For a target logit ``y`` read at query position ``q`` and block ``l``'s attention probabilities ``A_l``
(B, H, T, T), the map over image token ``t`` is (Chefer et al. 2021's attention Grad-CAM, as the LLaVA-Med
interpretation study applied it):

    cam_l[t] = mean_h  A_l[h, q, t] * max(dy / dA_l[h, q, t], 0)

then laid onto the architecture's grid (``handle.parts.vision.grid.to_grid``: a kept CLS prefix is dropped,
row-major ``rows x cols``; LLaVA-1.5 24 x 24, Gemma 3 16 x 16, the tiny models 6 x 6 and 4 x 4).

Targets (``target=``):

- ``answer``: each reference-answer token, teacher-forced; ``y`` is its logit at the position predicting it
  (soft-capped where the model caps); the maps of a prompt's first ``max_answer_tokens`` answer tokens are
  averaged (one backward pass per answer token, so each map holds only its own token's gradient);
- ``question``: the last question token (the position before generation); ``y`` is the logit of the token the
  model predicts there (its argmax).

sdpa and flash attention return no weights, so the run switches the model to eager attention
(:func:`eager_attention`) and restores every sub-model's implementation afterwards, also on error.
"""
from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import nn

from medinterp.errors import unknown_choice
from medinterp.hooks import forward_hooks
from medinterp.methods.answer_inputs import AnswerBatch, forward
from medinterp.models.head import head_logits
from medinterp.models import ModelHandle

TARGETS = ("answer", "question")


@contextmanager
def eager_attention(model: nn.Module) -> Iterator[None]:
    """The model (and each sub-model: text, vision) on eager attention inside the block; restored after."""
    config = model.config
    saved = {"": config._attn_implementation}
    saved.update({name: getattr(config, name)._attn_implementation for name in getattr(config, "sub_configs", {})
                  if getattr(config, name, None) is not None})
    model.set_attn_implementation("eager")
    try:
        yield
    finally:
        model.set_attn_implementation(saved)


@contextmanager
def attention_probs(handle: ModelHandle) -> Iterator[list[torch.Tensor]]:
    """A list filled, block by block, with the attention probabilities (B, H, T, T) the blocks' forward used.

    Taken in a forward hook on each block's attention module placed *before* every other hook: ZeRO-3's own hook
    (registered when the engine is built) hands each module output on through an autograd function, so the copy
    in the model's ``attentions`` output is not the tensor the attention output was computed from, and its
    gradient would be undefined. Without ZeRO-3 the two are the same tensor."""
    probs: list[torch.Tensor] = []

    def keep(_module, _args, output):
        probs.append(output[1])

    with forward_hooks([(handle.parts.attn(l), keep) for l in range(handle.n_layers)], prepend=True):
        yield probs


def _targets(handle: ModelHandle, batch: AnswerBatch, hidden: torch.Tensor, target: str,
             max_answer_tokens: int) -> list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
    """Per backward pass, ``(rows, pos, ids)``: the rows scored, their query positions and target token ids."""
    if target == "question":
        rows = torch.arange(hidden.shape[0], device=hidden.device)
        with torch.no_grad():
            ids = head_logits(handle.parts, hidden[rows, batch.question]).argmax(-1)
        return [(rows, batch.question, ids)]
    out = []
    for j in range(max_answer_tokens):
        rows = torch.nonzero(batch.n_answer > j)[:, 0]
        pos = batch.question[rows] + j
        out.append((rows, pos, batch.inputs["input_ids"][rows, pos + 1]))
    return out


def gradcam_tokens(handle: ModelHandle, batch: AnswerBatch, target: str = "answer",
                   max_answer_tokens: int = 8) -> torch.Tensor:
    """(B, L, n_tokens) float32 Grad-CAM over each row's image tokens (grid order, prefix included) per block;
    a row without targets (no answer tokens under ``target=answer``) is NaN.

    ``target=answer`` runs exactly ``max_answer_tokens`` backward passes whatever the batch's answers (a pass
    whose rows all have fewer answer tokens scores no row and adds nothing): under ZeRO-3 every backward pass
    gathers each block's weights from all ranks, so every rank must run as many passes on its batch. The method
    passes the longest answer of the whole cell (capped), so no pass is wasted on short-answer cells."""
    if target not in TARGETS:
        raise unknown_choice("gradcam target", target, TARGETS)
    pos_img = batch.image_positions  # (B, n)
    B, n = pos_img.shape
    with eager_attention(handle.model), torch.enable_grad(), attention_probs(handle) as attentions:
        out = forward(handle, batch, output_attentions=True)  # fills attentions: L x (B, H, T, T)
        passes = _targets(handle, batch, out.last_hidden_state, target, max_answer_tokens)
        total = torch.zeros(B, len(attentions), n, device=pos_img.device)
        count = torch.zeros(B, device=pos_img.device)
        for k, (rows, pos, ids) in enumerate(passes):
            logit = head_logits(handle.parts, out.last_hidden_state[rows, pos])[torch.arange(len(rows)), ids]  # (N,)
            grads = torch.autograd.grad(logit.sum(), attentions, retain_graph=k + 1 < len(passes))
            for l, (a, g) in enumerate(zip(attentions, grads)):
                cam = (a[rows, :, pos] * g[rows, :, pos].clamp(min=0)).float().mean(1)  # (N, T)
                total[rows, l] += cam.gather(1, pos_img[rows]).detach()
            count[rows] += 1
    return torch.where(count[:, None, None] > 0, total / count.clamp(min=1)[:, None, None], torch.nan)
