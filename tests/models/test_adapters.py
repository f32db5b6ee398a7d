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
    for key in ("llama", "gemma3_text", "gemma3", "qwen2", "qwen3", "gpt_oss", "LlamaForCausalLM", "Gemma3ForConditionalGeneration",
                "llava", "LlavaForConditionalGeneration"):
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


# -- quirks as data: each adapter's declarations against the model's actual behaviour ---------------------
def tiny_gemma3_multimodal():
    """A tiny random ``Gemma3ForConditionalGeneration`` (text tower = tiny gemma3, a 1-layer vision tower)."""
    import torch
    from transformers import Gemma3Config, Gemma3ForConditionalGeneration

    from medinterp.models.tiny import tiny_config

    config = Gemma3Config(text_config=tiny_config("gemma3", 256).to_dict(), mm_tokens_per_image=4,
                          vision_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                                             num_attention_heads=2, image_size=28, patch_size=14))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        return Gemma3ForConditionalGeneration(config).eval()


QUIRK_MODELS = {**{f: (lambda f=f: build_tiny_model(f, vocab_size=256, seed=0))
                   for f in (*TINY_FAMILIES, "llava", "gemma3_vlm")},  # the tiny VLMs on text-only prompts
                "gemma3_multimodal": tiny_gemma3_multimodal}
FAMILY = {"llama": "llama", "gemma3": "gemma3", "qwen2": "qwen", "qwen3": "qwen", "gpt_oss": "gpt_oss",
          "gemma3_multimodal": "gemma3_multimodal", "llava": "llava", "gemma3_vlm": "gemma3_multimodal"}


@pytest.mark.parametrize("name", sorted(QUIRK_MODELS))
def test_declared_quirks_match_what_the_model_does(name):
    """Block-output form = what a hook sees; the cache keyword = what generation passes each block; the text
    config = transformers' own; the soft-cap = the config's final_logit_softcapping."""
    import torch
    from transformers import Cache

    model = QUIRK_MODELS[name]()
    parts = adapter_for(model)
    assert parts.adapter.family == FAMILY[name]
    assert parts.text_config is model.config.get_text_config()
    assert parts.logit_softcap == getattr(parts.text_config, "final_logit_softcapping", None)  # these do not cap
    assert model.config.get_text_config().max_position_embeddings == 512
    seen: dict[str, object] = {}

    def output_hook(_module, _args, output):
        seen["tuple"] = isinstance(output, tuple)

    def input_hook(_module, _args, kwargs):
        seen["cache"] = kwargs.get(parts.cache_kwarg)

    ids = torch.tensor([[1, 5, 9, 3]])
    h1 = parts.layers[1].register_forward_hook(output_hook)
    h2 = parts.layers[1].register_forward_pre_hook(input_hook, with_kwargs=True)
    try:
        with torch.inference_mode():
            model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=2, do_sample=False,
                           use_cache=True, pad_token_id=0)
    finally:
        h1.remove(), h2.remove()
    assert seen["tuple"] is parts.block_returns_tuple  # declared "tensor" by every adapter under transformers 5
    assert isinstance(seen["cache"], Cache)  # the block really received the KV cache under parts.cache_kwarg


def test_the_softcap_is_read_from_the_text_config_and_is_what_the_model_applies():
    """Gemma 2 (gemma3 adapter): logits = cap · tanh(head(h) / cap) with cap = parts.logit_softcap."""
    import torch
    from transformers import AutoModelForCausalLM, Gemma2Config

    config = Gemma2Config(vocab_size=256, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                          num_attention_heads=4, num_key_value_heads=2, head_dim=16, final_logit_softcapping=0.5)
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(config).eval()
    parts = adapter_for(model)
    assert parts.adapter.family == "gemma3" and parts.logit_softcap == 0.5
    ids = torch.tensor([[1, 5, 9]])
    with torch.inference_mode():
        hidden = parts.backbone(input_ids=ids).last_hidden_state
        cap = parts.logit_softcap
        torch.testing.assert_close(model(input_ids=ids).logits, cap * torch.tanh(parts.lm_head(hidden) / cap))
    model.config.final_logit_softcapping = None  # read on every call: an edited config is honoured
    assert parts.logit_softcap is None


def test_a_multimodal_wrapper_binds_its_language_model():
    model = tiny_gemma3_multimodal()
    parts = adapter_for(model)
    lm = model.model.language_model
    assert parts.layers is lm.layers and parts.backbone is lm and parts.embed is lm.embed_tokens
    assert parts.final_norm is lm.norm and parts.lm_head is model.lm_head
    assert parts.text_config is model.config.text_config and parts.adapter.text_config == "text_config"


def test_bad_quirk_declarations_fail_loudly():
    with pytest.raises(MedinterpError, match="block_output must be one of tensor, tuple; got 'list'"):
        ArchAdapter(family="broken", model_types=(), block_output="list")
    with pytest.raises(MedinterpError, match="the model's config has no 'text_config'"):
        ArchAdapter(family="broken", model_types=(), text_config="text_config").bind(build_tiny_model("llama", 256))
