"""Turn (images, questions) into a VLM's batched inputs, the image placeholder where the processor needs it.

For each prompt: one image and one text. A text that already holds the processor's placeholder
(``processor.image_token``: ``<image>`` for LLaVA, ``<start_of_image>`` for Gemma 3) is used as it is (an image
prompt set's template put it there); otherwise, when the processor has a chat template, the prompt is one
user turn holding the image, then the text, rendered with the generation prompt (``ASSISTANT:``,
``<start_of_turn>model``); without a chat template the placeholder goes first, on its own line. The
processor then expands each placeholder into the image's ``grid.n_tokens`` image tokens, pads the batch on
the tokenizer's padding side and preprocesses the images into ``pixel_values``. A rendered prompt that already
starts with the tokenizer's BOS (Gemma's chat template writes ``<bos>``) is tokenized without adding
special tokens, so it never gets two.

The returned :class:`ImagePromptBatch` carries, beside the model inputs, each token's type (image / text /
padding) and each image's token positions in grid order (medinterp/models/image_tokens.py), checked against
the grid the adapter computed from the config.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from medinterp.errors import MedinterpError
from medinterp.models.arch.vision import BoundVision
from medinterp.models.image_tokens import image_positions, token_types


@dataclass
class ImagePromptBatch:
    """A batch of image prompts ready for the multimodal backbone."""

    inputs: dict[str, torch.Tensor]  # input_ids, attention_mask (B, T); pixel_values (B, 3, H, W); [token_type_ids]
    prompts: list[str]  # the rendered texts, one placeholder each, before expansion
    token_types: torch.Tensor  # (B, T): 1 image, 0 text, -1 padding
    image_positions: torch.Tensor  # (B, 1, grid.n_tokens): each prompt's image tokens in grid order
    extra: dict[str, Any] = field(default_factory=dict)  # other processor outputs (kept, not passed to the model)

    def to(self, device: torch.device | str, dtype: torch.dtype | None = None) -> ImagePromptBatch:
        """Tensors moved to ``device``; ``pixel_values`` also cast to ``dtype`` (the model's) when given."""
        inputs = {k: v.to(device, dtype) if k == "pixel_values" and dtype else v.to(device) for k, v in self.inputs.items()}
        return ImagePromptBatch(inputs, self.prompts, self.token_types.to(device), self.image_positions.to(device),
                                self.extra)


def render_prompt(processor: Any, text: str) -> str:
    """``text`` with the image placeholder where the processor needs it (see the module docstring)."""
    placeholder = processor.image_token
    if placeholder in text:
        return text
    if getattr(processor, "chat_template", None):
        messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": text}]}]
        return processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    return f"{placeholder}\n{text}"


def image_prompts(processor: Any, vision: BoundVision, images: Sequence[Any], texts: Sequence[str]) -> ImagePromptBatch:
    """Batch ``images[i]`` (PIL images or (H, W, 3) arrays) with ``texts[i]`` for the model ``vision`` belongs to."""
    if len(images) != len(texts) or not texts:
        raise MedinterpError(f"image prompts need one image per text; got {len(images)} images and {len(texts)} texts")
    prompts = [render_prompt(processor, text) for text in texts]
    for prompt in prompts:
        if prompt.count(processor.image_token) != 1:
            raise MedinterpError(f"an image prompt must hold the placeholder {processor.image_token!r} once: {prompt!r}")
    bos = getattr(processor.tokenizer, "bos_token", None)  # a chat template that writes it (Gemma's): not twice
    add_special = not (bos and all(prompt.startswith(bos) for prompt in prompts))
    enc = processor(images=[[image] for image in images], text=prompts, padding=True, return_tensors="pt",
                    add_special_tokens=add_special)
    names = ["input_ids", "attention_mask", "pixel_values"] + (["token_type_ids"] if vision.layout.token_type_ids else [])
    inputs = {name: enc[name] for name in names}
    extra = {k: v for k, v in enc.items() if k not in inputs}
    ids = inputs["input_ids"]
    return ImagePromptBatch(inputs, prompts, token_types(ids, vision.image_token_id, inputs["attention_mask"]),
                            image_positions(ids, vision), extra)
