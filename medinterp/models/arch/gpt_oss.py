"""GPT-OSS family (openai/gpt-oss-20b, -120b): mixture-of-experts blocks with Llama's outer layout.

Quirks: the MLP is a router plus experts (``mlp.router``, ``mlp.experts``); attention has sinks and
alternates sliding/full windows; released weights are MXFP4 and dequantize to bf16 on load.
"""
from medinterp.models.arch.base import ArchAdapter, register

GPT_OSS = register(ArchAdapter(
    family="gpt_oss",
    model_types=("gpt_oss",),
    architectures=("GptOssForCausalLM",),
))
