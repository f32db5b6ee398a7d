"""Where a VLM prompt's image tokens are: token types and per-image positions, from the input ids alone.

The processor expands each image placeholder into ``grid.n_tokens`` copies of the image token id
(:class:`~medinterp.models.arch.vision.BoundVision`), one contiguous run per image; the model overwrites
exactly those positions with the image features. Everything else (text, chat markup, Gemma 3's
``<start_of_image>`` / ``<end_of_image>`` brackets, BOS) is text; padding is neither.
"""
from __future__ import annotations

import torch

from medinterp.errors import MedinterpError
from medinterp.models.arch.vision import BoundVision

TOKEN_TYPES = ("text", "image")  # code 0, 1 in token_types (Gemma 3's token_type_ids convention); padding: -1
PAD = -1


def token_types(input_ids: torch.Tensor, image_token_id: int, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
    """(B, T) long: 1 on image tokens, 0 on text tokens, -1 on padding (``attention_mask == 0``)."""
    types = (input_ids == image_token_id).long()
    if attention_mask is not None:
        types = types.masked_fill(attention_mask == 0, PAD)
    return types


def image_positions(input_ids: torch.Tensor, vision: BoundVision) -> torch.Tensor:
    """(B, n_images, grid.n_tokens) long: the sequence positions of each image's tokens, in grid order.

    Every row must hold the same number of images, each one contiguous run of ``grid.n_tokens`` image
    tokens; anything else (a truncated prompt, a processor expanding to another grid) is a one-line error.
    """
    n = vision.grid.n_tokens
    mask = input_ids == vision.image_token_id  # (B, T)
    counts = mask.sum(-1)
    if input_ids.shape[0] == 0 or bool((counts % n).any()) or bool((counts != counts[0]).any()):
        raise MedinterpError(f"image tokens per prompt {counts.tolist()}: each prompt must hold the same number of "
                             f"images of {n} tokens (grid {vision.grid.rows}x{vision.grid.cols}"
                             f"{f' + {vision.grid.prefix} prefix' if vision.grid.prefix else ''}, token id "
                             f"{vision.image_token_id})")
    positions = mask.nonzero()[:, 1].reshape(input_ids.shape[0], -1, n)  # nonzero is row-major: rows in order
    runs = positions[..., -1] - positions[..., 0]
    if bool((runs != n - 1).any()):
        row = int((runs != n - 1).any(-1).nonzero()[0, 0])
        raise MedinterpError(f"prompt {row}: its image tokens are not contiguous runs of {n} (one run per image)")
    return positions
