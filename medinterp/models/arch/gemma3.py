"""Gemma 3 family (text-only ``gemma3_text`` and the multimodal ``gemma3`` wrapper).

Quirks, versus Llama:
- the embedding module (``Gemma3TextScaledWordEmbedding``) multiplies by sqrt(hidden_size) inside its
  forward, so its hooked output already equals ``hidden_states[0]``;
- four norms per block (input, post-attention, pre-/post-feed-forward) and RMSNorm weights stored as
  ``1 + w``;
- local sliding-window and global attention layers alternate; the hooks do not care;
- Gemma-3-4B/12B/27B checkpoints are ``Gemma3ForConditionalGeneration``: the language model sits under
  ``model.language_model`` and the text config under ``config.text_config`` (MedGemma-27B-text is
  text-only and uses the plain layout);
- the multimodal wrapper's vision side (:class:`~medinterp.models.arch.vision.VisionLayout`): a SigLIP tower
  (no CLS) whose image_size // patch_size patches the projector average-pools to a ``pooled`` grid of
  sqrt(mm_tokens_per_image) a side (MedGemma-4B: 64 x 64 patches → 16 x 16 = 256 tokens); the processor
  expands each ``<start_of_image>`` into ``\n\n<start_of_image>`` + 256 ``<image_soft_token>``
  (``config.image_token_id``) + ``<end_of_image>\n\n``; the forward wants ``token_type_ids`` (1 on image
  tokens), which make each image's tokens attend to each other bidirectionally;
- Gemma 2 soft-caps its final logits (``final_logit_softcapping``, read through
  :attr:`~medinterp.models.arch.base.BoundModel.logit_softcap`); Gemma 3 does not (None).
"""
from dataclasses import replace

from medinterp.models.arch.base import WRAPPED_LM, ArchAdapter, register
from medinterp.models.arch.vision import VisionLayout

GEMMA3_TEXT = register(ArchAdapter(
    family="gemma3",
    model_types=("gemma3_text", "gemma2", "gemma"),
    architectures=("Gemma3ForCausalLM", "Gemma2ForCausalLM", "GemmaForCausalLM"),
))

# The multimodal twin: same blocks, one level deeper.
GEMMA3_MULTIMODAL = register(replace(
    GEMMA3_TEXT,
    family="gemma3_multimodal",
    model_types=("gemma3",),
    architectures=("Gemma3ForConditionalGeneration",),
    **WRAPPED_LM,
    vision=VisionLayout(grid="pooled", token_type_ids=True),
))
