"""The Mistral adapter on tiny_mistral (conf/model/tiny_mistral.yaml): its parts, the residual stream its paths
read, the sliding window the tiny config really exercises, and one mapped cell through the real conf/."""
from __future__ import annotations

import math

import pytest
import torch

from medinterp.models import adapter_for, build_tiny_model
from medinterp.models.arch import discover


@pytest.fixture(scope="module")
def model():
    return build_tiny_model("mistral", vocab_size=256, seed=0)


def test_the_mistral_adapter_binds_the_parts(model):
    from transformers import MistralForCausalLM

    parts = adapter_for(model)
    assert isinstance(model, MistralForCausalLM) and parts.adapter.family == "mistral"
    assert parts.n_layers == 4 and parts.layers is model.model.layers
    assert parts.embed is model.model.embed_tokens and parts.final_norm is model.model.norm
    assert parts.lm_head is model.lm_head and parts.backbone is model.model
    assert parts.lm_head.weight is not parts.embed.weight  # untied, as in Mistral-7B
    assert parts.attn(2) is model.model.layers[2].self_attn and parts.mlp(2) is model.model.layers[2].mlp
    assert parts.logit_softcap is None and not parts.block_returns_tuple
    found = discover(model)
    for name in ("embed", "layers", "final_norm", "lm_head", "backbone"):
        assert getattr(found, name) is getattr(parts, name), name


def test_block_outputs_are_the_residual_stream(model):
    """Block l's hooked output = hidden_states[l + 1]; the last block's raw output, put through the adapter's
    final norm, = transformers' last hidden state (which is already normed)."""
    parts = adapter_for(model)
    seen = {}
    hooks = [block.register_forward_hook(lambda _m, _a, out, i=i: seen.__setitem__(i, out))
             for i, block in enumerate(parts.layers)]
    ids = torch.tensor([[3, 17, 42, 9, 11, 5, 77, 23, 8, 61, 4, 30]])
    try:
        with torch.inference_mode():
            hidden = model(input_ids=ids, output_hidden_states=True).hidden_states
    finally:
        for h in hooks:
            h.remove()
    for layer in range(3):
        torch.testing.assert_close(seen[layer], hidden[layer + 1], rtol=0, atol=0)
    torch.testing.assert_close(parts.final_norm(seen[3]), hidden[4])
    assert not torch.allclose(seen[3], hidden[4])  # read-out n is the raw output, before the norm


def test_the_sliding_window_cuts_long_prompts_only(model):
    """With sliding_window = 8, a 12-token prompt's last logits differ from full attention; a 6-token prompt's do not."""
    import copy

    full = copy.deepcopy(model)
    full.config.sliding_window = None
    for n_tokens, same in ((6, True), (12, False)):
        ids = torch.arange(1, n_tokens + 1)[None] * 7 % 256
        with torch.inference_mode():
            a, b = model(input_ids=ids).logits[0, -1], full(input_ids=ids).logits[0, -1]
        assert torch.allclose(a, b, atol=1e-6) is same, n_tokens


def test_a_tiny_mistral_cell_maps(tmp_path):
    """One umap cell of the real conf/ on tiny_mistral: every read-out 0..4 has a silhouette, and the summary
    names the mistral adapter."""
    import json

    from helpers import run_cell_in_process
    from medinterp.results import read_run

    out = run_cell_in_process(["model=tiny_mistral", "domain=drugs", "method=umap", "method.n_boot=10",
                               "templates=[started]", "logger=none", "report=false", "plots=false"], tmp_path / "r")
    run = read_run(out)
    layers = {r.layer for r in run.rows if r.metric == "silhouette_raw" and r.labeling == "mechanism"}
    assert layers == {0, 1, 2, 3, 4}
    assert all(math.isfinite(r.value) or r.note for r in run.rows)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["model"]["family"] == "mistral" and summary["model"]["n_layers"] == 4


def test_llava_med_layout_a_mistral_text_model_inside_llava():
    """LLaVA-Med v1.5 is a LlavaForConditionalGeneration around a Mistral decoder: the llava adapter binds it, and
    the blocks it names are Mistral's (sliding window and all)."""
    from transformers import LlavaConfig, LlavaForConditionalGeneration

    from medinterp.models.tiny import tiny_config

    base = tiny_config("llava", 256).to_dict()
    config = LlavaConfig(**{**base, "text_config": tiny_config("mistral", 256).to_dict()})
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = LlavaForConditionalGeneration(config).eval()
    parts = adapter_for(model)
    lm = model.model.language_model
    assert parts.adapter.family == "llava" and type(lm).__name__ == "MistralModel"
    assert parts.layers is lm.layers and parts.final_norm is lm.norm and parts.lm_head is model.lm_head
    assert parts.text_config.sliding_window == 8 and parts.n_layers == 4
