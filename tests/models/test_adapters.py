"""Adapters: every family resolves its canonical parts; discovery finds the same parts; bad paths fail loudly."""
from __future__ import annotations

import pytest
from torch import nn

from medinterp.errors import MedinterpError
from medinterp.models import adapter_for, build_tiny_model, get_module, registered
from medinterp.models.arch import discover
from medinterp.models.arch.base import ArchAdapter

from helpers import TINY_FAMILIES


@pytest.mark.parametrize("family", TINY_FAMILIES)
def test_adapter_binds_canonical_parts(family):
    model = build_tiny_model(family, vocab_size=256, seed=0)
    parts = adapter_for(model)
    assert parts.n_layers == 4
    assert parts.embed is model.get_input_embeddings()
    assert parts.lm_head is model.get_output_embeddings()
    assert parts.layers is model.model.layers
    assert parts.final_norm is model.model.norm
    assert parts.backbone is model.model
    assert isinstance(parts.attn(0), nn.Module) and isinstance(parts.mlp(3), nn.Module)


@pytest.mark.parametrize("family", TINY_FAMILIES)
def test_discovery_agrees_with_the_registered_adapter(family):
    model = build_tiny_model(family, vocab_size=256, seed=0)
    known, found = adapter_for(model), discover(model)
    for part in ("embed", "layers", "final_norm", "lm_head", "backbone"):
        assert getattr(found, part) is getattr(known, part), part
    assert found.attn(1) is known.attn(1) and found.mlp(1) is known.mlp(1)


def test_registry_covers_the_paper_families():
    keys = registered()
    for key in ("llama", "gemma3_text", "gemma3", "qwen2", "qwen3", "gpt_oss", "LlamaForCausalLM", "Gemma3ForConditionalGeneration"):
        assert key in keys, key


def test_same_seed_same_weights_and_caller_rng_untouched():
    import torch

    torch.manual_seed(123)
    before = torch.rand(1)
    torch.manual_seed(123)
    a = build_tiny_model("llama", 256, seed=7)
    after = torch.rand(1)
    b = build_tiny_model("llama", 256, seed=7)
    c = build_tiny_model("llama", 256, seed=8)
    assert torch.equal(before, after)
    assert torch.equal(a.model.layers[0].mlp.up_proj.weight, b.model.layers[0].mlp.up_proj.weight)
    assert not torch.equal(a.model.layers[0].mlp.up_proj.weight, c.model.layers[0].mlp.up_proj.weight)


def test_missing_path_names_it():
    model = build_tiny_model("llama", 256)
    with pytest.raises(MedinterpError, match="module path 'model.blocks' not found"):
        ArchAdapter(family="broken", model_types=(), layers="model.blocks").bind(model)
    with pytest.raises(MedinterpError, match="no '9'"):
        get_module(model, "model.layers.9")
