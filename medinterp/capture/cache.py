"""On-disk activation cache: capture once, reload on every rerun.

An entry holds the reduced residual stream of one prompt set under one template and one token
reduction: a float32 ``.npy`` of shape (n_layers + 1, n_items, d_model), layer-major so one layer
reads contiguously. It is keyed by

    <cache>/activations/<model key>/<prompt-set key>/<template>/<reduction>.npy  (+ .json metadata)

where the model key names the weights (name + a hash of source, dtype, revision, seed) and the
prompt-set key includes the file's sha256, so editing a prompt file never reuses stale activations.
The array is filled batch by batch through a memmap (memory stays bounded by one batch), written to a
temporary file and renamed into place only once complete.
"""
from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path

import numpy as np

from medinterp.capture.residual import capture
from medinterp.io import atomic_path, write_json
from medinterp.models import ModelHandle
from medinterp.prompts import PromptSet

log = logging.getLogger(__name__)

FORMAT_VERSION = 1  # bump when the meaning of a stored activation changes


def model_key(handle: ModelHandle) -> str:
    """Stable name of the weights: ``<name>-<hash of source, dtype, revision, seed, format>``."""
    s = handle.spec
    ident = "|".join(map(str, (s.source, handle.source if s.source != "tiny" else s.family, s.dtype, s.revision,
                               s.seed, FORMAT_VERSION)))
    return f"{s.name}-{hashlib.sha256(ident.encode()).hexdigest()[:10]}"


def entry_path(cache_dir: Path, handle: ModelHandle, prompt_set: PromptSet, template: str, reduction: str) -> Path:
    """Where the activations of one (model, prompt set, template, reduction) live."""
    return Path(cache_dir) / "activations" / model_key(handle) / prompt_set.key / template / f"{reduction}.npy"


def cached_activations(handle: ModelHandle, prompt_set: PromptSet, template: str, reduction: str = "last",
                       batch_size: int = 32, cache_dir: Path | None = None) -> np.ndarray:
    """Activations (n_layers + 1, n_items, d_model) for ``template``, from the cache or captured now.

    With ``cache_dir=None`` nothing is stored. A cached entry is returned memory-mapped, read-only.
    """
    prompts = prompt_set.prompts(template)
    texts = [p.text for p in prompts]
    spans = [p.term_span for p in prompts]
    desc = f"{prompt_set.domain}/{template}"
    if cache_dir is None:
        return capture(handle, texts, reduction, batch_size, spans, desc=desc)
    path = entry_path(cache_dir, handle, prompt_set, template, reduction)
    meta = {"model": handle.name, "model_source": handle.source, "prompt_set": prompt_set.key, "template": template,
            "reduction": reduction, "item_ids": [p.item_id for p in prompts], "format": FORMAT_VERSION,
            "shape": [handle.n_layers + 1, len(texts), handle.d_model]}
    meta_path = path.with_suffix(".json")
    if path.exists() and meta_path.exists() and json.loads(meta_path.read_text()) == meta:
        log.debug("activation cache hit: %s", path)
        return np.load(path, mmap_mode="r")
    log.info("capturing %s into %s", desc, path)
    with atomic_path(path) as tmp:
        out = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.float32, shape=tuple(meta["shape"]))
        capture(handle, texts, reduction, batch_size, spans, out=out, desc=desc)
        out.flush()
        del out
        write_json(meta_path, meta)  # metadata first; the array lands last, so a hit needs both complete
    return np.load(path, mmap_mode="r")
