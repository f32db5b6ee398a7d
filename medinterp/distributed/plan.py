"""The memory plan: parameters, bytes per rank for each method, and how many GPUs a model needs.

Computed from the architecture alone (hidden size, layers, vocabulary, MLP width, heads, experts), before
any weight is loaded: from a local folder's ``config.json`` when there is one, else from the published
configs of the paper's models below. Estimates, per rank:

- **weights**: all of them (``single``, ``ddp``); ``1/N`` of them plus the largest layer gathered for its
  forward (``zero3``); spread over the GPUs, then CPU, then disk (``device_map``);
- **work memory** per method, for one batch of ``tokens``-token prompts cut as the map cuts them: at most
  ``batch_size`` prompts and ``batch_tokens`` padded tokens (saliency: its own ``saliency_batch_tokens``
  within it; ablation's rows also hold the answer), see :meth:`Workload.rows`:

  - ``umap`` (capture): one block's output at a time, (B, T, d) in the model's dtype, plus the reduced
    batch (B, L + 1, d) float32; the activation cache itself, ``prompts × (L + 1) × d × 4`` bytes, goes
    to disk (rank 0) and is reported separately;
  - ``saliency``: the activations autograd keeps for the backward pass, ≈ (10·d + 4·I) values per token
    and layer (residual, norms, q/k/v/o, attention output, MLP gate/up/activation), in the model's
    dtype. No parameter gradient is ever materialized (per-prompt sums come from hooks), so there is no
    "+ weights" term;
  - ``ablation``: the (B, A, V) float32 log-probabilities of the intact answer, the KV cache of the
    greedy answers, and every block's output (B, T + A, d) kept for prefix reuse;
  - ``patching``: the clean run's cached site outputs (four sites per layer, (B, T, d)) and the
    corrupted run's block outputs;
  - ``geometry``: capture's, plus the float32 logits of the model's output and of the logit lens at every
    read-out for the batch's prompts ((L + 2) × B × V; at most ``lens_max_prompts`` prompts are decoded in
    the whole run, so this is the worst batch). The sampled token rows, (L + 1) × ``max_rows`` × d float32
    (Llama-3-8B, 20,000 rows: 10.8 GB), live in rank 0's host memory, not on the GPU.

A GPU is counted as usable up to ``usable`` (default 95 %) of its memory. The numbers are meant for
choosing the strategy and the node count, not as an exact bound (allocator fragmentation, CUDA context
and DeepSpeed's prefetch buckets come on top: about 1–3 GB per GPU).
"""
from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from medinterp.errors import MedinterpError

GB = 1e9
DTYPE_BYTES = {"float32": 4, "bfloat16": 2, "float16": 2, "auto": 2}
METHODS = ("umap", "saliency", "ablation", "patching", "geometry")


@dataclass(frozen=True)
class Arch:
    """The numbers of a decoder-only LM that decide its size (as in its Hugging Face ``config.json``)."""

    hidden: int
    layers: int
    vocab: int
    intermediate: int  # MLP width (per expert for mixture-of-experts)
    heads: int
    kv_heads: int
    head_dim: int
    tied: bool = False
    experts: int = 1  # mixture-of-experts: experts per layer (all held in memory)
    active_experts: int = 1  # experts each token runs
    qkv_bias: bool = False
    out_bias: bool = False  # o_proj bias (``attention_bias`` models; not Qwen2, whose bias is on q/k/v only)
    moe_bias: bool = False  # GPT-OSS: biased router and experts, and one attention sink per head

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> Arch:
        """From a ``config.json`` dict (multimodal configs: their ``text_config``)."""
        c = config.get("text_config", config)
        try:
            hidden, heads = int(c["hidden_size"]), int(c["num_attention_heads"])
            return cls(hidden=hidden, layers=int(c["num_hidden_layers"]), vocab=int(c["vocab_size"]),
                       intermediate=int(c["intermediate_size"]), heads=heads,
                       kv_heads=int(c.get("num_key_value_heads") or heads),
                       head_dim=int(c.get("head_dim") or hidden // heads),
                       tied=bool(c.get("tie_word_embeddings", config.get("tie_word_embeddings", False))),
                       experts=int(c.get("num_local_experts") or c.get("num_experts") or 1),
                       active_experts=int(c.get("num_experts_per_tok") or c.get("experts_per_token") or 1),
                       qkv_bias=bool(c.get("attention_bias", False)) or c.get("model_type") == "qwen2",
                       out_bias=bool(c.get("attention_bias", False)),
                       moe_bias=c.get("model_type") == "gpt_oss")
        except KeyError as err:
            raise MedinterpError(f"config.json lacks {err.args[0]!r}; the memory plan needs hidden_size, "
                                 "num_hidden_layers, vocab_size, intermediate_size, num_attention_heads") from None

    # -- parameter counts ------------------------------------------------------------------------------
    def attn_params(self) -> int:
        q, kv = self.heads * self.head_dim, self.kv_heads * self.head_dim
        bias = ((q + 2 * kv) if self.qkv_bias else 0) + (self.hidden if self.out_bias else 0)
        sinks = self.heads if self.moe_bias else 0
        return self.hidden * q + 2 * self.hidden * kv + q * self.hidden + bias + sinks

    def mlp_params(self) -> int:
        router = self.hidden * self.experts if self.experts > 1 else 0
        # router bias; per expert the gate/up bias (2 x intermediate) and the down bias (hidden)
        bias = self.experts * (1 + 2 * self.intermediate + self.hidden) if self.moe_bias else 0
        return self.experts * 3 * self.hidden * self.intermediate + router + bias  # gate, up, down

    def layer_params(self) -> int:
        return self.attn_params() + self.mlp_params() + 2 * self.hidden  # + the block's two norms

    def params(self) -> int:
        embed = self.vocab * self.hidden
        return self.layers * self.layer_params() + embed * (1 if self.tied else 2) + self.hidden


# Published configs (hub config.json) of the paper's models, by hub id; a local config.json wins.
KNOWN: dict[str, Arch] = {
    "meta-llama/Llama-3.3-70B-Instruct": Arch(8192, 80, 128256, 28672, 64, 8, 128),
    "google/gemma-3-27b-it": Arch(5376, 62, 262208, 21504, 32, 16, 128, tied=True),
    "google/medgemma-27b-it": Arch(5376, 62, 262208, 21504, 32, 16, 128, tied=True),
    "google/medgemma-27b-text-it": Arch(5376, 62, 262208, 21504, 32, 16, 128, tied=True),
    "Qwen/Qwen2.5-32B-Instruct": Arch(5120, 64, 152064, 27648, 40, 8, 128, qkv_bias=True),
    "Qwen/Qwen3-32B": Arch(5120, 64, 151936, 25600, 64, 8, 128),
    "openai/gpt-oss-120b": Arch(2880, 36, 201088, 2880, 64, 8, 64, experts=128, active_experts=4, qkv_bias=True,
                                  out_bias=True, moe_bias=True),
    "google/gemma-3-270m": Arch(640, 18, 262144, 2048, 4, 1, 256, tied=True),
    "HuggingFaceTB/SmolLM2-135M-Instruct": Arch(576, 30, 49152, 1536, 9, 3, 64, tied=True),
    # medical LLMs (docs/atlas.md): Llama-3-70B, LLaMA-13B (+[PAD]), Llama-2-70B (Meditron: +17 tokens), Mistral-7B
    "aaditya/Llama3-OpenBioLLM-70B": Arch(8192, 80, 128256, 28672, 64, 8, 128),
    "axiong/PMC_LLaMA_13B": Arch(5120, 40, 32001, 13824, 40, 40, 128),
    "wanglab/ClinicalCamel-70B": Arch(8192, 80, 32000, 28672, 64, 8, 128),
    "epfl-llm/meditron-70b": Arch(8192, 80, 32017, 28672, 64, 8, 128),
    "BioMistral/BioMistral-7B": Arch(4096, 32, 32000, 14336, 32, 8, 128),
    # vision-language models: their text model (the vision tower, 0.3-0.4 B, is left out)
    "llava-hf/llava-1.5-7b-hf": Arch(4096, 32, 32064, 11008, 32, 32, 128),
    "microsoft/llava-med-v1.5-mistral-7b": Arch(4096, 32, 32064, 14336, 32, 8, 128),  # as converted (+<image>)
    "google/medgemma-4b-it": Arch(2560, 34, 262208, 10240, 8, 4, 256, tied=True),
}


def arch_for(model: dict[str, Any]) -> Arch:
    """The architecture of a ``conf/model`` entry: a local ``config.json`` (``path``), else :data:`KNOWN`."""
    path = model.get("path")
    if path and (Path(path).expanduser() / "config.json").is_file():
        return Arch.from_config(json.loads((Path(path).expanduser() / "config.json").read_text()))
    if model.get("source") == "tiny":
        from medinterp.models.tiny import tiny_config

        return Arch.from_config(tiny_config(model.get("family") or "llama", 49152).to_dict())
    for key in (model.get("hub_id"), path):
        if key in KNOWN:
            return KNOWN[key]
    raise MedinterpError(f"no architecture numbers for model {model.get('name')!r}: give model.path=<folder with "
                         f"config.json>, or use one of the known hub ids: {', '.join(sorted(KNOWN))}")


@dataclass(frozen=True)
class Workload:
    """The batch a method runs (defaults: conf/map.yaml's and conf/method/'s, prompts of about 32 tokens)."""

    batch_size: int = 32  # prompts per forward (conf/map.yaml)
    tokens: int = 32
    answer_tokens: int = 8  # ablation's greedy answer
    prompts: int = 1000  # points captured for umap (items × templates): the activation cache size
    batch_tokens: int | None = 16384  # padded tokens per forward (conf/map.yaml)
    saliency_batch_tokens: int | None = 256  # saliency's own budget within batch_tokens (conf/method/saliency.yaml)

    def rows(self, method: str) -> int:
        """Prompts in one full batch of ``method``: ``batch_size``, fewer where the token budget binds."""
        budgets = [self.batch_tokens, self.saliency_batch_tokens if method == "saliency" else None]
        row = self.tokens + (self.answer_tokens if method == "ablation" else 0)
        return max(1, min([self.batch_size, *(b // row for b in budgets if b is not None)]))


@dataclass(frozen=True)
class MethodPlan:
    method: str
    weights_gb: float  # per rank
    work_gb: float  # per rank, one batch
    total_gb: float
    gpus: int  # GPUs of ``gpu_gb`` needed under the strategy (per-rank total must fit one)


@dataclass(frozen=True)
class Plan:
    model: str
    strategy: str
    world: int
    dtype: str
    params: int
    weights_gb: float  # all weights, in the model's dtype
    largest_layer_gb: float
    activation_cache_gb: float  # umap's on-disk cache (rank 0)
    gpu_gb: float
    methods: list[MethodPlan]

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    def table(self) -> str:
        """The plan as printable text."""
        lines = [f"model {self.model}: {self.params / 1e9:.2f} B parameters, {self.weights_gb:.1f} GB of weights in "
                 f"{self.dtype}; largest layer {self.largest_layer_gb:.2f} GB",
                 f"strategy {self.strategy}, {self.world} rank(s), GPUs of {self.gpu_gb:.0f} GB; umap activation cache "
                 f"{self.activation_cache_gb:.2f} GB on disk",
                 f"{'method':<10} {'weights/rank':>13} {'work/rank':>10} {'total/rank':>11} {'GPUs needed':>12}"]
        for m in self.methods:
            lines.append(f"{m.method:<10} {m.weights_gb:>10.1f} GB {m.work_gb:>7.1f} GB {m.total_gb:>8.1f} GB {m.gpus:>12}")
        return "\n".join(lines)


def work_bytes(arch: Arch, method: str, w: Workload, dtype_bytes: int) -> float:
    """Per-rank working memory of one batch of ``method`` (see the module docstring)."""
    d, L, B, T, A = arch.hidden, arch.layers, w.rows(method), w.tokens, w.answer_tokens
    inner = arch.intermediate * arch.active_experts
    if method == "umap":
        return B * T * d * dtype_bytes * 2 + B * (L + 1) * d * 4
    if method == "saliency":
        return B * T * L * (10 * d + 4 * inner) * dtype_bytes + B * T * arch.vocab * 4
    if method == "ablation":
        kv = B * (T + A) * L * 2 * arch.kv_heads * arch.head_dim * dtype_bytes
        return B * A * arch.vocab * 4 * 2 + kv + B * (T + A) * L * d * dtype_bytes
    if method == "patching":
        return B * T * d * dtype_bytes * (4 * L + L)
    if method == "geometry":  # capture's, plus the output logits and the lens of every read-out, (L + 2) B rows of V
        return B * T * d * dtype_bytes * 2 + B * (L + 1) * d * 4 + (L + 2) * B * arch.vocab * 4
    raise MedinterpError(f"unknown method {method!r}; valid: {', '.join(METHODS)}")


def plan(model: dict[str, Any], strategy: str = "zero3", world: int | None = None, gpu_gb: float = 80.0,
         workload: Workload | None = None, usable: float = 0.95) -> Plan:
    """The memory plan of ``model`` (a conf/model dict) under ``strategy`` with ``world`` ranks/GPUs.

    ``world=None``: the smallest GPU count on which every method fits. For ``single``/``ddp`` the model
    must fit one GPU whole (``gpus`` is 1, or 0 when it does not fit: use zero3 or device_map).
    """
    from medinterp.distributed.strategy import STRATEGIES

    if strategy not in STRATEGIES:
        from medinterp.errors import unknown_choice

        raise unknown_choice("strategy", strategy, STRATEGIES)
    w = workload or Workload()
    arch = arch_for(model)
    dtype = model.get("dtype") or "bfloat16"
    nbytes = DTYPE_BYTES.get(dtype, 2)
    weights = arch.params() * nbytes
    layer = arch.layer_params() * nbytes
    cap = gpu_gb * GB * usable

    def per_rank(n: int, work: float) -> float:
        if strategy == "zero3":
            return weights / n + layer + work
        if strategy == "device_map":
            return weights / n + work  # layers spread over n GPUs; one batch's work on each
        return weights + work

    def gpus_needed(work: float) -> int:
        if strategy in ("single", "ddp"):
            return 1 if per_rank(1, work) <= cap else 0
        free = cap - work - (layer if strategy == "zero3" else 0)
        return math.ceil(weights / free) if free > 0 else 0

    works = {m: work_bytes(arch, m, w, nbytes) for m in METHODS}
    if world is None:
        needed = [gpus_needed(x) for x in works.values()]
        world = max(needed) if all(needed) else 1
    methods = [MethodPlan(m, (per_rank(world, 0)) / GB, works[m] / GB, per_rank(world, works[m]) / GB,
                          gpus_needed(works[m])) for m in METHODS]
    return Plan(model=model.get("name", "?"), strategy=strategy, world=world, dtype=dtype, params=arch.params(),
                weights_gb=weights / GB, largest_layer_gb=layer / GB,
                activation_cache_gb=w.prompts * (arch.layers + 1) * arch.hidden * 4 / GB, gpu_gb=gpu_gb,
                methods=methods)
