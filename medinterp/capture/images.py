"""Capture the residual stream of a vision-language model on image prompts, pooled over one token type.

An image prompt (an item of an image prompt set rendered with one template) is run through the whole
multimodal backbone (``handle.parts.vision.backbone``: vision tower, projector, the merge of the image
features into the placeholder positions, the language model; no LM head), with the processor path of
medinterp/models/processor.py. Its prompt text is the template's text with medinterp's placeholder
``<image>`` replaced by the processor's own (``<image>`` for LLaVA, ``<start_of_image>`` for Gemma 3), with
no chat template: the same raw prompts the text methods read.

Read-outs are those of medinterp/capture/residual.py with one difference at 0: read-out 0 is the **input of
block 0** (``layers[0]``), not the output of the embedding module, because the image features are written
over the placeholder embeddings after the embedding module runs (Gemma 3: also after its sqrt(d) scaling,
which image features do not get). For text tokens the two are equal. Read-out ``l >= 1`` is the raw output
of block ``l - 1``.

Token types (``tokens=``, :data:`TOKEN_TYPES`) choose the positions the (B, T, D) hidden states are averaged
over, per prompt:

- ``image``: the image's ``grid.n_tokens`` tokens (the processor's positions of ``image_token_id``);
- ``text``: the text tokens of the prompt, special tokens (BOS, Gemma's ``<start_of_image>`` /
  ``<end_of_image>``, any ``tokenizer.all_special_ids``) and padding excluded, as the text reduction
  ``mean`` excludes BOS (an attention sink with an outsized norm);
- ``all``: both.

The pooled vector is ``sum_t w[b, t] h[b, t]`` with ``w`` uniform over the chosen positions (rows sum to 1).
Position ids count the real tokens (0.., whatever the padding side), so a prompt reads the same padded in a
batch or alone. Batches are cut by :func:`image_batch_order`, counting each prompt as its text tokens plus
``grid.n_tokens`` (an upper bound: the placeholder itself is counted once more).
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from medinterp.capture.limits import DEFAULT_BATCH_TOKENS, memory_errors, prompt_batches, prompt_names
from medinterp.capture.tokens import position_ids
from medinterp.errors import MedinterpError, unknown_choice
from medinterp.hooks import forward_hooks, record, record_input
from medinterp.models import ModelHandle
from medinterp.models.processor import ImagePromptBatch, image_prompts
from medinterp.prompts import IMAGE_TOKEN, load_image

TOKEN_TYPES = ("image", "text", "all")
READOUT_PREFIX = "tokens-"  # an image set's read-out name (the activation cache's ``reduction``): tokens-image, ...


def check_tokens(tokens: str) -> str:
    """``tokens`` if it is one of :data:`TOKEN_TYPES`, else the one-line error listing them."""
    if tokens not in TOKEN_TYPES:
        raise unknown_choice("tokens", tokens, TOKEN_TYPES)
    return tokens


def image_readout(tokens: str) -> str:
    """The read-out name of an image set pooled over ``tokens`` (``tokens-image``): the activation cache entry's name
    in place of a text reduction (last, mean, term)."""
    return READOUT_PREFIX + check_tokens(tokens)


def image_tokens(readout: str) -> str:
    """The token type of an image read-out name (:func:`image_readout`); one line for anything else."""
    if not readout.startswith(READOUT_PREFIX):
        names = ", ".join(map(image_readout, TOKEN_TYPES))
        raise MedinterpError(f"an image prompt set is read out by token type ({names}), not by the text reduction "
                             f"{readout!r}")
    return check_tokens(readout[len(READOUT_PREFIX):])


def require_vision(handle: ModelHandle, what: str) -> None:
    """One line when ``handle`` is a text-only model but ``what`` (e.g. ``prompt set 'synthetic_xray'``) has images."""
    if handle.parts.vision is None or handle.processor is None:
        raise MedinterpError(f"{what} holds images, but model {handle.name!r} is a text-only model; use a "
                             f"vision-language model (e.g. model=tiny_llava, medgemma_4b; docs/multimodal.md)")


def image_texts(processor: Any, prompts: Sequence[Any]) -> list[str]:
    """Each prompt's text with medinterp's ``<image>`` replaced by the processor's placeholder."""
    return [p.text.replace(IMAGE_TOKEN, processor.image_token) for p in prompts]


def image_batch_order(handle: ModelHandle, prompts: Sequence[Any], batch_size: int,
                      batch_tokens: int | None = DEFAULT_BATCH_TOKENS) -> list[np.ndarray]:
    """Prompt indices per batch (as :func:`medinterp.capture.residual.batch_order`), each prompt counted as its text
    tokens plus the image's ``grid.n_tokens``; every prompt checked against the model's context."""
    require_vision(handle, "the prompt set")
    return prompt_batches(handle, image_texts(handle.processor, prompts), batch_size, batch_tokens,
                          prompt_names(prompts), extra_tokens=handle.parts.vision.grid.n_tokens)


def encode_images(handle: ModelHandle, prompts: Sequence[Any]) -> ImagePromptBatch:
    """The processor's batch for ``prompts`` (each with ``.text`` and ``.image``), images loaded from disk."""
    require_vision(handle, "the prompt set")
    return image_prompts(handle.processor, handle.parts.vision, [load_image(p.image) for p in prompts],
                         image_texts(handle.processor, prompts))


def type_masks(input_ids: torch.Tensor, types: torch.Tensor, special_ids: Sequence[int]) -> dict[str, torch.Tensor]:
    """(B, T) bool masks of the positions of each token type (module docstring): ``image``, ``text``, ``all``, from
    the ids and their types (1 image, 0 text, -1 padding: medinterp.models.image_tokens.token_types)."""
    image = types == 1
    special = torch.isin(input_ids, torch.tensor(list(special_ids), dtype=input_ids.dtype, device=input_ids.device))
    text = (types == 0) & ~special
    return {"image": image, "text": text, "all": image | text}


def token_masks(batch: ImagePromptBatch, special_ids: Sequence[int]) -> dict[str, torch.Tensor]:
    """:func:`type_masks` of a processor batch: the positions each token type pools."""
    return type_masks(batch.inputs["input_ids"], batch.token_types, special_ids)


def pool_weight(batch: ImagePromptBatch, special_ids: Sequence[int], tokens: str) -> torch.Tensor:
    """(B, T) float weights, uniform over the positions of ``tokens`` in each prompt (rows sum to 1)."""
    mask = token_masks(batch, special_ids)[check_tokens(tokens)].float()
    counts = mask.sum(-1, keepdim=True)
    if (counts == 0).any():
        bad = int((counts == 0).nonzero()[0, 0])
        raise MedinterpError(f"no {tokens} tokens to pool in image prompt {batch.prompts[bad]!r}")
    return mask / counts


def model_inputs(batch: ImagePromptBatch) -> dict[str, torch.Tensor]:
    """The backbone's inputs: the processor's, plus position ids along the real tokens."""
    return {**batch.inputs, "position_ids": position_ids(batch.inputs["attention_mask"])}


@dataclass
class ImageTokens:
    """A processor batch of image prompts seen through the interface of :class:`~medinterp.capture.tokens.TokenBatch`
    that per-position methods read (ids, mask, last index, model inputs, to, rows): one side of a batch of image
    pairs for patching, a geometry batch."""

    batch: ImagePromptBatch

    @property
    def input_ids(self) -> torch.Tensor:  # (B, T)
        return self.batch.inputs["input_ids"]

    @property
    def attention_mask(self) -> torch.Tensor:  # (B, T)
        return self.batch.inputs["attention_mask"]

    @property
    def last_index(self) -> torch.Tensor:  # (B,) the last real position, left or right padding alike
        mask = self.attention_mask
        return (mask * torch.arange(mask.shape[1], device=mask.device)).argmax(-1)

    @property
    def image(self) -> torch.Tensor:  # (B, T) bool: the image's grid tokens
        return self.batch.token_types == 1

    def model_inputs(self) -> dict[str, torch.Tensor]:
        """The multimodal backbone's inputs (image inputs included, position ids along the real tokens)."""
        return model_inputs(self.batch)

    def to(self, device: torch.device) -> ImageTokens:
        return ImageTokens(self.batch.to(device))

    def rows(self, index: torch.Tensor) -> ImageTokens:
        """The pairs ``index`` of this batch (every tensor input is per row: ids, masks, pixel values)."""
        b = self.batch
        inputs = {k: v[index.to(v.device)] for k, v in b.inputs.items()}
        index = index.to(b.token_types.device)
        return ImageTokens(ImagePromptBatch(inputs, [b.prompts[i] for i in index.tolist()], b.token_types[index],
                                            b.image_positions[index], b.extra))


@torch.inference_mode()
def capture_image_batch(handle: ModelHandle, batch: ImagePromptBatch, layers: Sequence[int],
                        tokens: str | None) -> list[torch.Tensor]:
    """Residual stream at read-outs ``layers`` for one batch of image prompts: (B, D) tensors pooled over ``tokens``,
    or (B, T, D) when ``tokens`` is None."""
    parts = handle.parts
    batch = batch.to(handle.device, handle.model.dtype)
    weight = None if tokens is None else pool_weight(batch, handle.tokenizer.all_special_ids, tokens)
    reduce = None if weight is None else (lambda hidden: torch.einsum("btd,bt->bd", hidden, weight.to(hidden.dtype)))
    stop_at = max(layers)
    captured: dict[int, torch.Tensor] = {}
    hooks = [(parts.layers[0], record_input(captured, 0, reduce, stop=stop_at == 0)) if layer == 0 else
             (parts.layers[layer - 1], record(captured, layer, reduce, stop=layer == stop_at)) for layer in layers]
    with forward_hooks(hooks):
        parts.vision.backbone(**model_inputs(batch), use_cache=False)
    return [captured[layer] for layer in layers]


def capture_image_indices(handle: ModelHandle, prompts: Sequence[Any], idx: np.ndarray, tokens: str,
                          layers: Sequence[int] | None = None, batch_size: int | None = None,
                          batch_tokens: int | None = None) -> np.ndarray:
    """Pooled residual stream of the image prompts ``prompts[idx]`` (one batch): (n_readouts, len(idx), d_model)
    float32. ``batch_size`` and ``batch_tokens`` (the run's limits) only go into the out-of-memory message."""
    layers = list(range(handle.n_layers + 1)) if layers is None else list(layers)
    batch = encode_images(handle, [prompts[i] for i in idx])
    with memory_errors(batch_size or len(idx), batch_tokens, handle.device):
        acts = capture_image_batch(handle, batch, layers, tokens)
    return np.stack([act.float().cpu().numpy() for act in acts])
