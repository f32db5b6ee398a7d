"""The vision side of a vision-language model, as data: where the image tokens come from and the grid they form.

A LLaVA-style or Gemma-3 VLM turns each image into ``n_tokens`` embeddings (vision tower → projector) and
writes them, in order, over the ``n_tokens`` placeholder tokens (``config.image_token_id``) that the processor
put in the prompt. From then on the language model treats them as ordinary positions of its residual stream.
Methods that look at image tokens (token-type splits, the image-token logit lens, Grad-CAM) need three facts:

- which positions are image tokens: ``input_ids == image_token_id`` (medinterp/models/image_tokens.py);
- the grid those positions form, **computed from the config** (never hard-coded), row-major (token
  ``prefix + r * cols + c`` is patch row ``r``, column ``c``; both towers flatten a (rows, cols) feature map):

  - ``patches`` (LLaVA, CLIP tower): ``side = vision_config.image_size // vision_config.patch_size``; with
    ``vision_feature_select_strategy="default"`` the CLS token is dropped (LLaVA-1.5: 336 // 14 = 24,
    576 = 24 x 24 tokens); with ``"full"`` it is kept as one leading token (``prefix = 1``, 577 tokens);
  - ``pooled`` (Gemma 3, SigLIP tower, no CLS): the projector average-pools the
    ``image_size // patch_size`` square of patches down to ``side = sqrt(mm_tokens_per_image)``
    (MedGemma-4B: 896 // 14 = 64 patches a side pooled 4 x 4 to 16 x 16 = 256 tokens);
- which module runs the whole multimodal forward without the LM head (``backbone``: vision tower,
  projector, merge, language model), since the language model alone never sees the image.

The residual stream entering block 0 of a VLM is the *input of block 0*, not the output of the token
embedding: the image features are written over the placeholder embeddings after the embedding module
runs (and, in Gemma 3, after its sqrt(d) scaling, which image features do not get).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from medinterp.errors import MedinterpError, unknown_choice

GRIDS = ("patches", "pooled")
SELECT_STRATEGIES = ("default", "full")  # LLaVA's vision_feature_select_strategy: CLS dropped / kept


@dataclass(frozen=True)
class ImageGrid:
    """The layout of one image's tokens: ``prefix`` leading non-patch tokens (a kept CLS), then ``rows x cols``
    patch tokens in row-major order."""

    rows: int
    cols: int
    prefix: int = 0

    @property
    def n_tokens(self) -> int:
        """Placeholder tokens per image in the prompt (``prefix + rows * cols``)."""
        return self.prefix + self.rows * self.cols

    def to_grid(self, values: torch.Tensor) -> torch.Tensor:
        """Per-token values (..., n_tokens) → per-patch map (..., rows, cols); the prefix tokens are dropped."""
        if values.shape[-1] != self.n_tokens:
            raise MedinterpError(f"image grid {self.rows}x{self.cols} (+{self.prefix} prefix) needs {self.n_tokens} "
                                 f"values per image; got {values.shape[-1]}")
        return values[..., self.prefix:].reshape(*values.shape[:-1], self.rows, self.cols)


def patch_grid(config: Any) -> ImageGrid:
    """LLaVA (CLIP tower): ``image_size // patch_size`` patches a side; a CLS prefix only under strategy "full"."""
    vision = config.vision_config
    strategy = config.vision_feature_select_strategy
    if strategy not in SELECT_STRATEGIES:
        raise unknown_choice("vision_feature_select_strategy", strategy, SELECT_STRATEGIES)
    side = int(vision.image_size) // int(vision.patch_size)
    return ImageGrid(side, side, prefix=0 if strategy == "default" else 1)


def pooled_grid(config: Any) -> ImageGrid:
    """Gemma 3 (SigLIP tower): ``sqrt(mm_tokens_per_image)`` tokens a side, average-pooled from the patches."""
    n = int(config.mm_tokens_per_image)
    side = math.isqrt(n)
    patches = int(config.vision_config.image_size) // int(config.vision_config.patch_size)
    if side * side != n or side == 0 or patches % side:
        raise MedinterpError(f"mm_tokens_per_image={n} must be a square whose side divides the {patches} patches "
                             f"a side of the vision tower (image_size // patch_size)")
    return ImageGrid(side, side)


GRID_RULES = {"patches": patch_grid, "pooled": pooled_grid}


@dataclass(frozen=True)
class VisionLayout:
    """Dotted module paths (relative to the ``*ForConditionalGeneration`` model) and rules of a VLM family.

    - ``backbone``: the module that runs vision tower, projector, merge and language model (no LM head) and
      takes ``pixel_values``; a capture of image prompts calls it instead of the language model;
    - ``image_token``: the config attribute holding the placeholder token id;
    - ``grid``: the rule (:data:`GRIDS`) giving the image grid from the config;
    - ``token_type_ids``: whether the forward wants ``token_type_ids`` (1 = image) beside the input ids
      (Gemma 3: image tokens attend to each other bidirectionally; without them the mask is causal).
    """

    grid: str
    tower: str = "model.vision_tower"
    projector: str = "model.multi_modal_projector"
    backbone: str = "model"
    image_token: str = "image_token_id"
    token_type_ids: bool = False

    def __post_init__(self) -> None:
        if self.grid not in GRIDS:
            raise unknown_choice("image grid rule", self.grid, GRIDS)

    def bind(self, model: nn.Module, family: str) -> BoundVision:
        """Resolve the paths on ``model`` and compute the grid and the image token id from its config."""
        from medinterp.models.arch.base import get_module

        config = model.config
        token = getattr(config, self.image_token, None)
        if not isinstance(token, int):
            raise MedinterpError(f"adapter {family!r}: the model's config has no integer {self.image_token!r}")
        return BoundVision(layout=self, tower=get_module(model, self.tower, family),
                           projector=get_module(model, self.projector, family),
                           backbone=get_module(model, self.backbone, family),
                           image_token_id=token, grid=GRID_RULES[self.grid](config))


@dataclass(frozen=True)
class BoundVision:
    """The vision parts of one concrete VLM, resolved at load time."""

    layout: VisionLayout
    tower: nn.Module
    projector: nn.Module
    backbone: nn.Module
    image_token_id: int
    grid: ImageGrid
