"""LLaVA family (``LlavaForConditionalGeneration``: LLaVA-1.5, HF-format LLaVA-Med v1.5 Mistral-7B).

Layout in transformers 5: ``model.vision_tower`` (a ``CLIPVisionModel``), ``model.multi_modal_projector``
(linear_1 → GELU → linear_2, LLaVA-1.5's ``mlp2x_gelu``), ``model.language_model`` (a ``LlamaModel`` or
``MistralModel``: embed_tokens, layers, norm) and ``lm_head`` at the top; the text config is
``config.text_config``.

Quirks, versus the Llama text model inside:
- each ``<image>`` placeholder (``config.image_token_id``, alias of ``image_token_index``; 32000 in
  llava-hf/llava-1.5-7b-hf) is one of ``n_tokens`` copies the processor expands, overwritten by the
  projected features of vision-tower layer ``vision_feature_layer`` (-2);
- the grid is ``patches``: (image_size // patch_size)² CLIP patches, CLS dropped under the default
  ``vision_feature_select_strategy`` (336 // 14 = 24, 576 tokens), kept as one leading token under "full";
- LLaVA-Med's released checkpoint uses the original LLaVA repository's layout; runners/convert_llava_med.py
  writes this one (medinterp/models/llava_convert.py).
"""
from medinterp.models.arch.base import WRAPPED_LM, ArchAdapter, register
from medinterp.models.arch.vision import VisionLayout

LLAVA = register(ArchAdapter(
    family="llava",
    model_types=("llava",),
    architectures=("LlavaForConditionalGeneration",),
    **WRAPPED_LM,
    vision=VisionLayout(grid="patches"),
))
