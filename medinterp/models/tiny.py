"""Tiny random models for fast tests: real architectures, shrunk configs, fixed seeds.

Each family builds a 4-block model with hidden size 64 from its transformers config class, so the
adapters, hooks and methods run the same code they run on real checkpoints, in milliseconds. The vocab
is SmolLM2's real tokenizer (49,152 entries), so prompts tokenize as they do on a real model.

The two tiny vision-language families wrap a tiny text model with a 2-layer vision tower on small images
(milliseconds on CPU), with grids of different sizes so a method using the wrong one fails:

- ``llava``: ``LlavaForConditionalGeneration``, tiny llama text model (untied head), CLIP tower on 48 x 48
  images with 8-pixel patches → 6 x 6 = 36 image tokens (CLS dropped, strategy "default", layer -2);
- ``gemma3_vlm``: ``Gemma3ForConditionalGeneration``, tiny gemma3 text model, SigLIP tower on 64 x 64 images
  with 8-pixel patches (8 x 8 of them) average-pooled 2 x 2 to 4 x 4 = 16 image tokens.

Their image tokens (:data:`IMAGE_TOKENS`) are added to the tokenizer after its vocabulary, in that order, so
they are the last ids of the model's vocabulary (medinterp/models/tiny_vlm.py builds the processor).
"""
from __future__ import annotations

import torch
from transformers import PreTrainedModel

VLM_FAMILIES = ("llava", "gemma3_vlm")
# A family whose random weights changed gets a revision: it names the family's saved folder and activation-cache key
# (tiny_build_id), so weights built before the change are never reused. gemma3_vlm r2: its projector matrix is random
# (transformers initialises it to zeros, which maps every image to the same zero features).
BUILD_REVISION = {"gemma3_vlm": 2}


def tiny_build_id(family: str) -> str:
    """``family``, or ``<family>-r<revision>`` once its random weights changed (:data:`BUILD_REVISION`)."""
    revision = BUILD_REVISION.get(family)
    return f"{family}-r{revision}" if revision else family
# Added tokens per VLM family, in the order they follow the base vocabulary (the first is the image token).
IMAGE_TOKENS = {"llava": ("<image>",), "gemma3_vlm": ("<image_soft_token>", "<start_of_image>", "<end_of_image>")}
TINY_VISION = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2, patch_size=8)

COMMON = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=4, num_attention_heads=4,
              num_key_value_heads=2, max_position_embeddings=512)


def tiny_config(family: str, vocab_size: int, pad_token_id: int | None = None):
    """The config of a tiny ``family`` model (llama, gemma3, qwen2, qwen3, gpt_oss, mistral, llava, gemma3_vlm).

    ``vocab_size`` includes a VLM family's :data:`IMAGE_TOKENS`, which take its last ids."""
    from transformers import (Gemma3Config, Gemma3TextConfig, GptOssConfig, LlamaConfig, LlavaConfig, MistralConfig,
                              Qwen2Config, Qwen3Config)

    if family == "llava":
        text = tiny_config("llama", vocab_size, pad_token_id).to_dict() | {"tie_word_embeddings": False}
        side = 48 // TINY_VISION["patch_size"]
        return LlavaConfig(text_config=text, image_token_index=vocab_size - 1, image_seq_length=side * side,
                           vision_config=dict(model_type="clip_vision_model", image_size=48, projection_dim=32,
                                              **TINY_VISION),
                           vision_feature_layer=-2, vision_feature_select_strategy="default")
    if family == "gemma3_vlm":
        image, boi, eoi = range(vocab_size - 3, vocab_size)
        return Gemma3Config(text_config=tiny_config("gemma3", vocab_size, pad_token_id).to_dict(),
                            vision_config=dict(model_type="siglip_vision_model", image_size=64, vision_use_head=False,
                                               **TINY_VISION),  # no pooling head, as in Gemma 3's released configs
                            mm_tokens_per_image=16, image_token_index=image, boi_token_index=boi, eoi_token_index=eoi)

    if family == "llama":
        return LlamaConfig(vocab_size=vocab_size, pad_token_id=pad_token_id, tie_word_embeddings=True, **COMMON)
    if family == "qwen2":
        return Qwen2Config(vocab_size=vocab_size, pad_token_id=pad_token_id, **COMMON)
    if family == "qwen3":
        return Qwen3Config(vocab_size=vocab_size, pad_token_id=pad_token_id, head_dim=16, **COMMON)
    if family == "mistral":
        # untied head as in Mistral-7B; a sliding window shorter than our prompts, so it really cuts attention
        return MistralConfig(vocab_size=vocab_size, pad_token_id=pad_token_id, head_dim=16, sliding_window=8,
                             tie_word_embeddings=False, **COMMON)
    if family == "gemma3":
        # sliding_window smaller than our prompts, so local and global layers really differ.
        return Gemma3TextConfig(vocab_size=vocab_size, pad_token_id=pad_token_id, head_dim=16, sliding_window=8,
                                layer_types=["sliding_attention", "sliding_attention", "full_attention", "sliding_attention"],
                                **COMMON)
    if family == "gpt_oss":
        # Mixture of experts: 4 experts of which 2 route per token (experts are 3-D tensors, not Linears);
        # attention sinks, biased projections, sliding/full layers alternating as in the released models.
        return GptOssConfig(vocab_size=vocab_size, pad_token_id=pad_token_id, head_dim=16, sliding_window=8,
                            num_local_experts=4, num_experts_per_tok=2, tie_word_embeddings=False,
                            layer_types=["sliding_attention", "full_attention"] * 2,
                            # the released YaRN scaling (x32), from a pre-YaRN context that fits 512 positions
                            rope_parameters=dict(rope_type="yarn", rope_theta=150000.0, factor=32.0, beta_fast=32.0,
                                                 beta_slow=1.0, truncate=False, original_max_position_embeddings=16),
                            **COMMON)
    raise ValueError(f"unknown tiny family {family!r}")


def build_tiny_model(family: str, vocab_size: int, seed: int = 0, pad_token_id: int | None = None) -> PreTrainedModel:
    """A randomly initialised tiny ``family`` model; the same seed gives the same weights."""
    from transformers import AutoModelForCausalLM, AutoModelForImageTextToText

    config = tiny_config(family, vocab_size, pad_token_id)
    auto = AutoModelForImageTextToText if family in VLM_FAMILIES else AutoModelForCausalLM
    with torch.random.fork_rng(devices=[]):  # seed locally, leave the caller's RNG alone
        torch.manual_seed(seed)
        model = auto.from_config(config, dtype=torch.float32)
        if family == "gemma3_vlm":  # transformers zero-initialises the projection: every image would read the same
            torch.nn.init.normal_(model.model.multi_modal_projector.mm_input_projection_weight,
                                  std=config.text_config.initializer_range)
    return model.eval()
