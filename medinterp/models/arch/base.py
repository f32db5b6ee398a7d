"""Architecture adapters: where each canonical part of a decoder-only LM lives.

Methods never hard-code attribute paths. They ask the model's adapter for

- ``embed``: the token-embedding module; its output is the residual stream entering layer 0
  (``hidden_states[0]`` in transformers);
- ``layers``: the ``nn.ModuleList`` of decoder blocks; block ``l``'s output is ``hidden_states[l+1]``,
  except for the last block, whose raw output transformers replaces by ``final_norm(output)``;
- ``final_norm``: the norm applied after the last block;
- ``lm_head``: the unembedding;
- ``backbone``: the module that runs embeddings → blocks → final norm without the LM head;
- ``attn`` / ``mlp``: attribute names of the attention and MLP sub-modules inside one block.

Beside the paths, each adapter states the quirks methods must know, as data (never re-detected by a
method; :class:`BoundModel` exposes them resolved for one model):

- ``text_config``: the attribute of ``model.config`` holding the language model's config in a
  multimodal wrapper (Gemma 3's ``text_config``), or None when the config is the text config;
  :attr:`BoundModel.logit_softcap` and the context length are read from it;
- ``block_output``: what a decoder block returns, ``"tensor"`` (transformers 5) or ``"tuple"``
  (``(hidden, ...)``, transformers 4 and some remote code);
- ``cache_kwarg``: the keyword under which a block receives the KV cache (``cache`` from transformers
  5.24 on, ``past_key_values`` before); None: the one of :data:`CACHE_KWARGS` the block's ``forward``
  declares, read once at bind time;
- ``vision``: for a vision-language model, its :class:`~medinterp.models.arch.vision.VisionLayout` (vision
  tower, projector, the multimodal backbone, the image token id and the image grid rule); None for a
  text-only model. :attr:`BoundModel.vision` holds it resolved (the grid computed from the config).

One small file per architecture family declares these paths (see ``llama.py``); the registry is keyed
by the HF ``model_type`` and the ``architectures`` class name. A model no adapter knows is handled by
:func:`discover`, which finds the same parts structurally and logs what it found.
"""
from __future__ import annotations

import logging
import inspect
from dataclasses import dataclass, field
from typing import Any

from torch import nn

from medinterp.errors import MedinterpError
from medinterp.models.arch.vision import BoundVision, VisionLayout

log = logging.getLogger(__name__)

BLOCK_OUTPUTS = ("tensor", "tuple")
CACHE_KWARGS = ("cache", "past_key_values", "past_key_value")  # transformers >= 5.24, 5.0–5.23, 4.x


# The paths of a language model wrapped by a transformers 5 ``*ForConditionalGeneration`` (LLaVA, Gemma 3 4B+):
# the decoder one level deeper, under ``model.language_model``, its config under ``config.text_config``.
WRAPPED_LM: dict[str, str] = {"embed": "model.language_model.embed_tokens", "layers": "model.language_model.layers",
                              "final_norm": "model.language_model.norm", "backbone": "model.language_model",
                              "text_config": "text_config"}


@dataclass(frozen=True)
class ArchAdapter:
    """Dotted module paths (relative to the ``*ForCausalLM`` model) of one architecture family."""

    family: str
    model_types: tuple[str, ...]
    embed: str = "model.embed_tokens"
    layers: str = "model.layers"
    final_norm: str = "model.norm"
    lm_head: str = "lm_head"
    backbone: str = "model"
    attn: str = "self_attn"
    mlp: str = "mlp"
    architectures: tuple[str, ...] = ()
    text_config: str | None = None  # attribute of model.config holding the text config (multimodal wrappers)
    block_output: str = "tensor"  # "tensor" | "tuple": what a decoder block returns
    cache_kwarg: str | None = None  # the KV cache's keyword in a block's forward; None: read from its signature
    vision: VisionLayout | None = None  # vision-language models: image tokens, grid, multimodal backbone
    notes: str = field(default="", compare=False)

    def __post_init__(self) -> None:
        if self.block_output not in BLOCK_OUTPUTS:
            raise MedinterpError(f"adapter {self.family!r}: block_output must be one of {', '.join(BLOCK_OUTPUTS)}; "
                                 f"got {self.block_output!r}")

    def bind(self, model: nn.Module) -> BoundModel:
        """Resolve every path on ``model``; a missing path raises an error that names it."""
        layers = get_module(model, self.layers, self.family)
        if not isinstance(layers, nn.ModuleList) or len(layers) == 0:
            raise MedinterpError(f"adapter {self.family!r}: {self.layers!r} is not a non-empty ModuleList")
        for sub in (self.attn, self.mlp):
            get_module(layers[0], sub, self.family)
        config = getattr(model, "config", None)
        if self.text_config is not None and not hasattr(config, self.text_config):
            raise MedinterpError(f"adapter {self.family!r}: the model's config has no {self.text_config!r}")
        return BoundModel(
            adapter=self,
            embed=get_module(model, self.embed, self.family),
            layers=layers,
            final_norm=get_module(model, self.final_norm, self.family),
            lm_head=get_module(model, self.lm_head, self.family),
            backbone=get_module(model, self.backbone, self.family),
            config=config,
            cache_kwarg=self.cache_kwarg or _cache_kwarg(layers[0]),
            vision=None if self.vision is None else self.vision.bind(model, self.family),
        )


def _cache_kwarg(block: nn.Module) -> str | None:
    """The one of :data:`CACHE_KWARGS` that ``block``'s forward declares (None: it takes no KV cache)."""
    params = inspect.signature(type(block).forward).parameters
    return next((name for name in CACHE_KWARGS if name in params), None)


@dataclass(frozen=True)
class BoundModel:
    """The canonical parts of one concrete model, resolved once at load time."""

    adapter: ArchAdapter
    embed: nn.Module
    layers: nn.ModuleList
    final_norm: nn.Module
    lm_head: nn.Module
    backbone: nn.Module
    config: Any = None  # the model's config (of the whole wrapper for multimodal models)
    cache_kwarg: str | None = None  # the KV cache's keyword in a block's forward (ArchAdapter.cache_kwarg)
    vision: BoundVision | None = None  # vision-language models only (ArchAdapter.vision)

    @property
    def text_config(self) -> Any:
        """The language model's config: ``config.<adapter.text_config>`` for multimodal wrappers, else ``config``."""
        name = self.adapter.text_config
        return self.config if name is None else getattr(self.config, name)

    @property
    def logit_softcap(self) -> float | None:
        """Final logit soft-capping ``cap`` (logits = cap · tanh(logits / cap); Gemma 2), or None.

        Read from the text config's ``final_logit_softcapping`` on every call, so a config edited after
        loading is honoured."""
        cap = getattr(self.text_config, "final_logit_softcapping", None)
        return float(cap) if cap else None

    @property
    def block_returns_tuple(self) -> bool:
        """Whether a decoder block returns ``(hidden, ...)`` rather than the hidden tensor (``adapter.block_output``)."""
        return self.adapter.block_output == "tuple"

    @property
    def n_layers(self) -> int:
        """Number of decoder blocks (the residual stream has ``n_layers + 1`` read-out points)."""
        return len(self.layers)

    def attn(self, layer: int) -> nn.Module:
        """The attention sub-module of block ``layer``."""
        return get_module(self.layers[layer], self.adapter.attn, self.adapter.family)

    def mlp(self, layer: int) -> nn.Module:
        """The MLP sub-module of block ``layer``."""
        return get_module(self.layers[layer], self.adapter.mlp, self.adapter.family)


def get_module(root: nn.Module, path: str, who: str = "model") -> nn.Module:
    """``root.a.b.0.c`` for ``path="a.b.0.c"``; a missing part raises a one-line error naming it."""
    module = root
    for part in path.split(".") if path else []:
        child = getattr(module, part, None) if not part.isdigit() else _index(module, int(part))
        if not isinstance(child, nn.Module):
            raise MedinterpError(f"{who}: module path {path!r} not found (no {part!r} in {type(module).__name__})")
        module = child
    return module


def _index(module: nn.Module, i: int) -> nn.Module | None:
    try:
        return module[i]  # type: ignore[index]
    except (TypeError, IndexError):
        return None


# ---------------------------------------------------------------------------------------------------
# Registry
# ---------------------------------------------------------------------------------------------------
_REGISTRY: dict[str, ArchAdapter] = {}


def register(adapter: ArchAdapter) -> ArchAdapter:
    """Add ``adapter`` under each of its model types and architecture names; duplicates are refused."""
    for key in (*adapter.model_types, *adapter.architectures):
        if key in _REGISTRY and _REGISTRY[key] is not adapter:
            raise ValueError(f"adapter key {key!r} registered twice ({_REGISTRY[key].family}, {adapter.family})")
        _REGISTRY[key] = adapter
    return adapter


def registered() -> dict[str, ArchAdapter]:
    """A copy of the registry: key (model_type or architecture class name) → adapter."""
    return dict(_REGISTRY)


def adapter_for(model: nn.Module) -> BoundModel:
    """Bind the registered adapter for ``model`` (by class name, then ``config.model_type``), else discover."""
    config = getattr(model, "config", None)
    for key in (type(model).__name__, getattr(config, "model_type", None)):
        if key in _REGISTRY:
            return _REGISTRY[key].bind(model)
    return discover(model)


def discover(model: nn.Module) -> BoundModel:
    """Find the canonical parts of an unknown decoder-only LM structurally.

    The decoder blocks are the longest ``nn.ModuleList`` whose children all share one class; the
    embedding is ``get_input_embeddings()``; the LM head ``get_output_embeddings()``; the final norm is
    the sibling of the blocks whose name contains "norm"; the backbone is the blocks' parent.
    """
    best: tuple[int, str] | None = None
    for name, mod in model.named_modules():
        if isinstance(mod, nn.ModuleList) and len(mod) > 0 and len({type(c) for c in mod}) == 1:
            if best is None or len(mod) > best[0]:
                best = (len(mod), name)
    if best is None:
        raise MedinterpError(f"cannot find decoder layers in {type(model).__name__}; add an adapter in medinterp/models/arch/")
    layers_path = best[1]
    parent = layers_path.rpartition(".")[0]
    named = dict(model.named_modules())
    embed = next((n for n, m in named.items() if m is model.get_input_embeddings()), None)
    head = next((n for n, m in named.items() if m is model.get_output_embeddings()), None)
    prefix = f"{parent}." if parent else ""
    norms = [n for n in named if n.startswith(prefix) and n.count(".") == prefix.count(".") and "norm" in n.rsplit(".", 1)[-1]]
    block = named[layers_path][0]
    attn = next((n for n, _ in block.named_children() if "attn" in n or "attention" in n), None)
    mlp = next((n for n, _ in block.named_children() if "mlp" in n or "feed_forward" in n or n == "ffn"), None)
    missing = [k for k, v in {"embed": embed, "lm_head": head, "final_norm": norms[:1] or None, "attn": attn, "mlp": mlp}.items() if not v]
    if missing:
        raise MedinterpError(f"cannot discover {', '.join(missing)} in {type(model).__name__}; add an adapter in medinterp/models/arch/")
    text_config = "text_config" if hasattr(getattr(model, "config", None), "text_config") else None
    adapter = ArchAdapter(family=f"discovered:{type(model).__name__}", model_types=(), embed=embed, layers=layers_path,
                          final_norm=norms[0], lm_head=head, backbone=parent, attn=attn, mlp=mlp,
                          text_config=text_config)
    log.warning("no adapter for %s; discovered %s", type(model).__name__, adapter)
    return adapter.bind(model)
