"""Load a model from a :class:`ModelSpec` into a :class:`ModelHandle` (model, tokenizer, adapter).

Every source ends in the same place: a ``*ForCausalLM`` in eval mode on the requested device, its
tokenizer with a pad token, and its canonical parts bound by the architecture adapter.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from medinterp.errors import MedinterpError
from medinterp.models.arch import BoundModel, adapter_for
from medinterp.models.sources import default_cache_dir, materialize, smollm2_tokenizer_dir
from medinterp.models.spec import ModelSpec
from medinterp.models.tiny import build_tiny_model

log = logging.getLogger(__name__)


@dataclass
class ModelHandle:
    """A loaded model with what methods need to know about it."""

    spec: ModelSpec
    model: PreTrainedModel
    tokenizer: PreTrainedTokenizerBase
    parts: BoundModel
    device: torch.device
    source: str  # the folder or id the weights came from (for logs and summary.json)

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def n_layers(self) -> int:
        """Number of decoder blocks."""
        return self.parts.n_layers

    @property
    def d_model(self) -> int:
        """Width of the residual stream."""
        return int(self.parts.embed.weight.shape[-1])


def resolve_device(device: str) -> torch.device:
    """``auto`` → cuda if available else cpu; anything else must be a valid torch device string."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except RuntimeError:
        raise MedinterpError(f"invalid device {device!r}; valid: auto, cpu, cuda, cuda:N") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise MedinterpError(f"device {device!r} requested but CUDA is not available; use device=cpu")
    return dev


def _dtype(name: str) -> torch.dtype | str:
    return "auto" if name == "auto" else getattr(torch, name)


def load_model(spec: ModelSpec, device: str = "auto", cache_dir: Path | None = None) -> ModelHandle:
    """Load ``spec`` (materializing packaged GGUF weights into the cache on first use)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    cache_dir = Path(cache_dir or default_cache_dir())
    dev = resolve_device(device)
    if spec.source == "tiny":
        source = str(smollm2_tokenizer_dir(cache_dir))
        tokenizer = AutoTokenizer.from_pretrained(source)
        model = build_tiny_model(spec.family or "", len(tokenizer), seed=spec.seed, pad_token_id=tokenizer.pad_token_id)
    else:
        source = str(materialize(spec, cache_dir)) if spec.source.startswith("gguf") else str(Path(spec.path or "").expanduser())
        kw = dict(revision=spec.revision, trust_remote_code=spec.trust_remote_code)
        try:
            tokenizer = AutoTokenizer.from_pretrained(source, **kw)
            model = AutoModelForCausalLM.from_pretrained(source, dtype=_dtype(spec.dtype), **kw)
        except (OSError, ValueError) as err:
            first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
            local = Path(source).is_dir()
            where = "local folder" if local else "not a local folder, and the hub is unreachable or the id is wrong"
            raise MedinterpError(f"model {spec.name!r}: cannot load {source!r} ({where}): {first}") from None
    if tokenizer.pad_token is None:  # SmolLM2 and Llama ship none; padding positions are masked anyway
        tokenizer.pad_token = tokenizer.eos_token
    if spec.padding_side:
        tokenizer.padding_side = spec.padding_side
    model = model.to(dev).eval()
    parts = adapter_for(model)
    if spec.n_layers is not None and parts.n_layers != spec.n_layers:
        raise MedinterpError(f"model {spec.name!r}: config says n_layers={spec.n_layers} but the weights have {parts.n_layers}")
    log.info("model %s (%s, %d layers, d=%d) from %s on %s", spec.name, parts.adapter.family, parts.n_layers,
             int(parts.embed.weight.shape[-1]), source, dev)
    return ModelHandle(spec=spec, model=model, tokenizer=tokenizer, parts=parts, device=dev, source=source)
