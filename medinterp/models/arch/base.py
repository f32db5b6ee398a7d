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

One small file per architecture family declares these paths (see ``llama.py``); the registry is keyed
by the HF ``model_type`` and the ``architectures`` class name. A model no adapter knows is handled by
:func:`discover`, which finds the same parts structurally and logs what it found.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field

from torch import nn

from medinterp.errors import MedinterpError

log = logging.getLogger(__name__)


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
    notes: str = field(default="", compare=False)

    def bind(self, model: nn.Module) -> BoundModel:
        """Resolve every path on ``model``; a missing path raises an error that names it."""
        layers = get_module(model, self.layers, self.family)
        if not isinstance(layers, nn.ModuleList) or len(layers) == 0:
            raise MedinterpError(f"adapter {self.family!r}: {self.layers!r} is not a non-empty ModuleList")
        for sub in (self.attn, self.mlp):
            get_module(layers[0], sub, self.family)
        return BoundModel(
            adapter=self,
            embed=get_module(model, self.embed, self.family),
            layers=layers,
            final_norm=get_module(model, self.final_norm, self.family),
            lm_head=get_module(model, self.lm_head, self.family),
            backbone=get_module(model, self.backbone, self.family),
        )


@dataclass(frozen=True)
class BoundModel:
    """The canonical parts of one concrete model, resolved once at load time."""

    adapter: ArchAdapter
    embed: nn.Module
    layers: nn.ModuleList
    final_norm: nn.Module
    lm_head: nn.Module
    backbone: nn.Module

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
    adapter = ArchAdapter(family=f"discovered:{type(model).__name__}", model_types=(), embed=embed, layers=layers_path,
                          final_norm=norms[0], lm_head=head, backbone=parent, attn=attn, mlp=mlp)
    log.warning("no adapter for %s; discovered %s", type(model).__name__, adapter)
    return adapter.bind(model)
