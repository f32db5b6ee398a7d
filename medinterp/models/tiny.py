"""Tiny random models for fast tests: real architectures, shrunk configs, fixed seeds.

Each family builds a 4-block model with hidden size 64 from its transformers config class, so the
adapters, hooks and methods run the same code they run on real checkpoints, in milliseconds. The vocab
is SmolLM2's real tokenizer (49,152 entries), so prompts tokenize as they do on a real model.
"""
from __future__ import annotations

import torch
from transformers import PreTrainedModel

COMMON = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=4, num_attention_heads=4,
              num_key_value_heads=2, max_position_embeddings=512)


def tiny_config(family: str, vocab_size: int, pad_token_id: int | None = None):
    """The config of a tiny ``family`` model (llama, gemma3, qwen2, qwen3, gpt_oss)."""
    from transformers import Gemma3TextConfig, GptOssConfig, LlamaConfig, Qwen2Config, Qwen3Config

    if family == "llama":
        return LlamaConfig(vocab_size=vocab_size, pad_token_id=pad_token_id, tie_word_embeddings=True, **COMMON)
    if family == "qwen2":
        return Qwen2Config(vocab_size=vocab_size, pad_token_id=pad_token_id, **COMMON)
    if family == "qwen3":
        return Qwen3Config(vocab_size=vocab_size, pad_token_id=pad_token_id, head_dim=16, **COMMON)
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
    from transformers import AutoModelForCausalLM

    config = tiny_config(family, vocab_size, pad_token_id)
    with torch.random.fork_rng(devices=[]):  # seed locally, leave the caller's RNG alone
        torch.manual_seed(seed)
        model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    return model.eval()
