"""Qwen family (Qwen2, Qwen2.5, Qwen3): Llama's layout under other names.

Quirks: Qwen2/2.5 have biases on the q/k/v projections; Qwen3 drops them and adds q/k RMSNorm inside
attention. Neither changes where the residual stream is read, so both share one adapter.
"""
from medinterp.models.arch.base import ArchAdapter, register

QWEN = register(ArchAdapter(
    family="qwen",
    model_types=("qwen2", "qwen3"),
    architectures=("Qwen2ForCausalLM", "Qwen3ForCausalLM"),
))
