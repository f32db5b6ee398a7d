"""Llama family (Llama 2/3, SmolLM2, and the Llama-based medical models: OpenBioLLM, PMC-LLaMA, ClinicalCamel,
Meditron): the reference layout every other adapter is compared with (Mistral has its own: mistral.py).

Quirks: RMSNorm without bias; no biases in attention or MLP; rotary embeddings live in
``model.rotary_emb`` (not a layer); the LM head may be tied to the embedding (SmolLM2). Blocks return a
plain tensor in transformers 5.x (a tuple in 4.x; the hooks accept both).
"""
from medinterp.models.arch.base import ArchAdapter, register

LLAMA = register(ArchAdapter(
    family="llama",
    model_types=("llama",),
    architectures=("LlamaForCausalLM",),
))
