"""Activation patching on image pairs (an image prompt set's ``pairs``): the same question asked of two images.

An image pair (medinterp/prompts/schema.py ``ContrastPair.has_images``) has one question and two images, so the
clean and corrupted runs have the *same* token ids and differ only in the image features the multimodal backbone
(``handle.parts.vision.backbone``: vision tower, projector, merge, language model) writes over the image's grid
tokens. Each run of a pair gets its own image inputs (``pixel_values``, Gemma 3's ``token_type_ids``), batched by
the processor exactly as :func:`medinterp.capture.images.encode_images` does; P, LD and the sites are those of
:mod:`medinterp.methods.patching_engine`, with these definitions:

- **read-out 0** is the *input* of block 0 (as in medinterp/capture/images.py): the image features are merged
  after the embedding module runs, so its output holds the placeholder's embedding at the image positions;
- **token types** (``tokens``, medinterp/methods/tokens.py) restrict every site's positions:
  ``image`` = the image's grid tokens (``image_token_id``); ``text`` = every *other* real position (the
  question's text, BOS and the image delimiters: image and text partition the sequence, as ablation's lesions
  do); ``all`` (null) = every real position. A site patches (its positions) ∩ (the token type's positions);
- **resid_diff** patches the positions where the two runs' inputs differ: the image positions (the token ids
  are equal; the images are not). So under ``tokens=text`` it patches nothing, and ``resid_last`` (the last
  position, a text token) patches nothing under ``tokens=image``: their P is 0 exactly (no forward is run, the
  rows say so in ``note``).

Checks that follow from the definitions (tests/methods/test_patching_images.py): ``resid_all`` at read-out 0
gives P = 1 exactly for ``image`` and 0 for ``text`` (the text positions have not yet read the image); at the
last read-out, P = 0 for ``image`` (no later block reads it) and 1 for ``text``.
"""
from __future__ import annotations

from collections.abc import Sequence

import torch

from medinterp.capture.images import ImageTokens, encode_images
from medinterp.capture.limits import check_context, token_batches
from medinterp.models import ModelHandle
from medinterp.prompts import IMAGE_TOKEN, Prompt

EMPTY_SITES = {("resid_diff", "text"), ("resid_last", "image")}  # (site, tokens) that patch no position of a pair


def token_positions(side: ImageTokens, tokens: str) -> torch.Tensor | None:
    """(B, T) bool: the real positions of ``tokens`` (module docstring); None for ``all`` (no restriction)."""
    if tokens == "all":
        return None
    image = side.image
    return image if tokens == "image" else side.attention_mask.bool() & ~image


def encode_side(handle: ModelHandle, question_images: Sequence[tuple[str, str]]) -> ImageTokens:
    """``(question, image path)`` per pair → the processor's batch, as the capture encodes an image set's prompts."""
    prompts = [Prompt("", "", q, (q.index(IMAGE_TOKEN), q.index(IMAGE_TOKEN) + len(IMAGE_TOKEN)), image)
               for q, image in question_images]
    return ImageTokens(encode_images(handle, prompts))


def image_pair_groups(handle: ModelHandle, lengths: Sequence[int], names: Sequence[str], batch_size: int,
                      batch_tokens: int | None) -> list[list[int]]:
    """Pair indices per batch: each pair counted as its question's tokens plus the image's ``grid.n_tokens`` (an
    upper bound, as :func:`medinterp.capture.images.image_batch_order`), every pair checked against the context."""
    total = [n + handle.parts.vision.grid.n_tokens for n in lengths]
    name = lambda i: f"patching pair {names[i]!r}"  # noqa: E731
    check_context(total, handle.max_positions, name, handle.name)
    return [[int(i) for i in batch] for batch in token_batches(total, batch_size, batch_tokens, name=name)]
