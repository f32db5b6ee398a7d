"""On-disk activation cache: capture once, reload on every rerun.

An entry holds the reduced residual stream of one prompt set under one template and one token
reduction: a float32 ``.npy`` of shape (n_layers + 1, n_items, d_model), layer-major so one layer
reads contiguously. It is keyed by

    <cache>/activations/<model key>/<prompt-set key>/<template>/<reduction>.npy  (+ .json metadata)

where the model key names the weights (name + a hash of source, dtype, revision, seed) and the
prompt-set key includes the file's sha256, so editing a prompt file never reuses stale activations.
The array is filled batch by batch through a memmap (memory stays bounded by one batch), written to a
temporary file and renamed into place only once complete.

Integrity: the metadata stores the array file's full sha256 (hashing runs at about 1 GB/s: 19 ms for a
Gemma-3-270M entry of 20 MB, 0.16 s for 200 MB; docs/benchmarks.md). Every hit is verified before use; an
entry whose file is missing, truncated, altered in place or unreadable, or whose metadata is unreadable,
is reported in one WARNING naming the path, removed, and captured again. Entries written before the
checksum existed (no ``sha256`` in the metadata) are treated as stale and recaptured once: their bytes
cannot be verified against anything. :func:`read_entry` is the one reader of entries and
:class:`ActivationCapture` the one writer (the UMAP method's capture units and :func:`cached_activations` use it).
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from medinterp.capture.limits import DEFAULT_BATCH_TOKENS, check_positive_int, prompt_names
from medinterp.capture.residual import batch_order, capture_indices
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


def entry_meta(handle: ModelHandle, prompt_set: PromptSet, template: str, reduction: str) -> dict[str, Any]:
    """The metadata of one entry, without its checksum; a hit needs the stored metadata to match it exactly."""
    prompts = prompt_set.prompts(template)
    return {"model": handle.name, "model_source": handle.source, "prompt_set": prompt_set.key, "template": template,
            "reduction": reduction, "item_ids": [p.item_id for p in prompts], "format": FORMAT_VERSION,
            "shape": [handle.n_layers + 1, len(prompts), handle.d_model]}


def file_sha256(path: Path) -> str:
    """The sha256 of a file's bytes, read in chunks."""
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def _drop(path: Path, why: str) -> None:
    log.warning("activation cache entry %s %s; removed, capturing it again", path, why)
    path.unlink(missing_ok=True)
    path.with_suffix(".json").unlink(missing_ok=True)


def read_entry(path: Path, meta: dict[str, Any], load: bool = True) -> np.ndarray | bool | None:
    """The verified entry at ``path`` (memory-mapped, read-only), or None when it must be captured.

    None without a word when there is no entry, or one for other settings or in the pre-checksum format
    (recaptured and replaced); None after one WARNING naming the path, the entry removed, when its
    metadata or array is unreadable or its bytes do not match the stored sha256. ``load=False`` only
    verifies: True for a good entry.
    """
    path = Path(path)
    meta_path = path.with_suffix(".json")
    if not meta_path.exists():
        return None
    try:
        stored = json.loads(meta_path.read_text())
        assert isinstance(stored, dict)
    except (OSError, ValueError, AssertionError) as err:
        _drop(path, f"has unreadable metadata {meta_path.name} ({type(err).__name__})")
        return None
    checksum = stored.pop("sha256", None)
    if stored != meta:
        return None
    if checksum is None:
        log.info("activation cache entry %s has no checksum (written by an older medinterp); capturing it again", path)
        return None
    if not path.exists():
        _drop(path, "is missing its array file")
        return None
    try:
        actual = file_sha256(path)
    except OSError as err:
        _drop(path, f"is unreadable ({type(err).__name__}: {err})")
        return None
    if actual != checksum:
        _drop(path, f"does not match its checksum (sha256 {actual[:12]}, stored {checksum[:12]}; truncated or altered)")
        return None
    try:
        array = np.load(path, mmap_mode="r")
    except (OSError, ValueError) as err:
        _drop(path, f"is unreadable ({type(err).__name__}: {err})")
        return None
    if list(array.shape) != list(meta["shape"]) or array.dtype != np.float32:
        _drop(path, f"has shape {list(array.shape)} {array.dtype}, expected {meta['shape']} float32")
        return None
    log.debug("activation cache hit: %s", path)
    return array if load else True


def commit_entry(tmp: Path, path: Path, meta: dict[str, Any]) -> None:
    """Write the metadata of the complete array ``tmp`` (with its sha256) for the entry ``path``.

    Called before ``tmp`` is renamed onto ``path``: a crash in between leaves metadata whose checksum
    the old file (if any) does not match, which :func:`read_entry` detects.
    """
    write_json(Path(path).with_suffix(".json"), {**meta, "sha256": file_sha256(Path(tmp))})


@dataclass
class _Entry:
    """One template's capture: its prompts, its batches still to capture, and where they go."""

    template: str
    texts: list[str]
    spans: list[tuple[int, int]]
    batches: list[np.ndarray]  # empty: the entry is in the cache
    meta: dict[str, Any]
    path: Path | None  # the cache entry (None: no cache)
    out: np.ndarray | None = None  # rank 0, while capturing
    tmp: Path | None = None


class ActivationCapture:
    """The one writer of the activation cache: every template's prompts as batches (units) that any rank can
    capture, written on rank 0 straight into the entry's memmap, committed (checksum, then rename) when complete.

    Templates whose verified entry exists (``cached``: rank 0's view, since other nodes may not see the same
    disk) have no batches. Without a cache (``cache_dir=None``) batches go into plain arrays.
    Rank 0 calls :meth:`open`, :meth:`sink` for every batch (any order), :meth:`close`, then :meth:`activations`.
    """

    def __init__(self, handle: ModelHandle, prompt_set: PromptSet, templates: Sequence[str], reduction: str,
                 batch_size: int, batch_tokens: int | None, cache_dir: Path | None, cached: set[str]) -> None:
        check_positive_int("batch_size", batch_size)
        self.handle, self.reduction = handle, reduction
        self.batch_size, self.batch_tokens = batch_size, batch_tokens  # for the out-of-memory message
        self.entries: list[_Entry] = []
        self.units: list[tuple[int, int]] = []  # (entry, batch)
        for ti, t in enumerate(templates):
            prompts = prompt_set.prompts(t)
            texts, spans = [p.text for p in prompts], [p.term_span for p in prompts]
            batches = [] if t in cached else batch_order(handle, texts, batch_size, batch_tokens,
                                                         prompt_names(prompts))
            path = entry_path(cache_dir, handle, prompt_set, t, reduction) if cache_dir is not None else None
            self.entries.append(_Entry(t, texts, spans, batches, entry_meta(handle, prompt_set, t, reduction), path))
            self.units += [(ti, bi) for bi in range(len(batches))]
        self._stack = contextlib.ExitStack()

    @staticmethod
    def cached(handle: ModelHandle, prompt_set: PromptSet, templates: Sequence[str], reduction: str,
               cache_dir: Path | None) -> set[str]:
        """Templates whose complete entry exists and passes its checksum (a damaged entry is reported and removed,
        see :func:`read_entry`)."""
        if cache_dir is None:
            return set()
        return {t for t in templates if read_entry(entry_path(cache_dir, handle, prompt_set, t, reduction),
                                                   entry_meta(handle, prompt_set, t, reduction), load=False)}

    def run(self, i: int) -> np.ndarray:
        """Capture batch ``i`` (any rank): (n_layers + 1, batch, d_model) float32."""
        e, b = self.units[i]
        entry = self.entries[e]
        return capture_indices(self.handle, entry.texts, entry.batches[b], self.reduction, entry.spans,
                               batch_size=self.batch_size, batch_tokens=self.batch_tokens)

    def open(self) -> None:
        """Rank 0: the arrays the batches are written into (a temporary file per cache entry)."""
        for entry in self.entries:
            if entry.batches:
                shape = tuple(entry.meta["shape"])
                if entry.path is None:
                    entry.out = np.zeros(shape, dtype=np.float32)
                else:
                    log.info("capturing %s/%s into %s", entry.meta["prompt_set"], entry.template, entry.path)
                    entry.tmp = self._stack.enter_context(atomic_path(entry.path))
                    entry.out = np.lib.format.open_memmap(entry.tmp, mode="w+", dtype=np.float32, shape=shape)

    def sink(self, i: int, acts: np.ndarray) -> None:
        e, b = self.units[i]
        self.entries[e].out[:, self.entries[e].batches[b]] = acts

    def close(self, ok: bool) -> None:
        """Rank 0: flush the memmaps and move complete entries into place (metadata, with the sha256, first: a crash
        in between leaves metadata the old file cannot match); on failure remove the temporary files."""
        if not ok:
            self._stack.__exit__(RuntimeError, RuntimeError("capture failed"), None)
            return
        for entry in self.entries:
            if entry.tmp is not None:
                entry.out.flush()
                entry.out = None
                commit_entry(entry.tmp, entry.path, entry.meta)
        self._stack.close()

    def activations(self) -> list[np.ndarray]:
        """Rank 0, after :meth:`close`: each template's (n_layers + 1, n_items, d_model) array (cache entries
        memory-mapped, read-only)."""
        return [np.load(e.path, mmap_mode="r") if e.path is not None else e.out for e in self.entries]


def cached_activations(handle: ModelHandle, prompt_set: PromptSet, template: str, reduction: str = "last",
                       batch_size: int = 32, cache_dir: Path | None = None,
                       batch_tokens: int | None = DEFAULT_BATCH_TOKENS) -> np.ndarray:
    """Activations (n_layers + 1, n_items, d_model) for ``template``, from the cache or captured now (in this
    process, through :class:`ActivationCapture`). With ``cache_dir=None`` nothing is stored. A cached entry is
    verified (see the module docstring) and returned memory-mapped, read-only."""
    cap = ActivationCapture(handle, prompt_set, [template], reduction, batch_size, batch_tokens, cache_dir,
                            ActivationCapture.cached(handle, prompt_set, [template], reduction, cache_dir))
    cap.open()
    ok = False
    try:
        for i in tqdm(range(len(cap.units)), desc=f"{prompt_set.domain}/{template}", unit="batch", leave=False):
            cap.sink(i, cap.run(i))
        ok = True
    finally:
        cap.close(ok)
    return cap.activations()[0]
