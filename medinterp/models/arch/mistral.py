"""Mistral family (Mistral-7B v0.1/v0.2/v0.3, BioMistral-7B; the language model of LLaVA-Med v1.5).

Llama's layout (``model.embed_tokens``, ``model.layers``, ``model.norm``, ``lm_head``; ``self_attn`` and
``mlp`` in each block), with its own quirks:
- sliding-window attention: with ``config.sliding_window`` set (4096 in Mistral-7B v0.1 and BioMistral-7B;
  null from v0.2 on), each token attends to at most that many previous tokens. It only matters for prompts
  longer than the window (ours are ~10-60 tokens), and the hooks never see it: block outputs are read the same;
- grouped-query attention (32 query heads, 8 key/value heads in the 7B models) and an untied LM head;
- inside LLaVA-Med v1.5 the Mistral decoder sits under ``model.language_model`` of a
  ``LlavaForConditionalGeneration`` (the ``llava`` adapter's paths; medinterp/models/arch/llava.py).

Checked on ``tiny_mistral`` (conf/model/tiny_mistral.yaml: 4 blocks, d = 64, sliding window 8 so the window
really cuts the tests' prompts; tests/models/test_mistral_adapter.py).
"""
from medinterp.models.arch.base import ArchAdapter, register

MISTRAL = register(ArchAdapter(
    family="mistral",
    model_types=("mistral",),
    architectures=("MistralForCausalLM",),
))
