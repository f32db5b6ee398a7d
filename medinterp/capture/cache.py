"""On-disk activation cache: capture once, reload on every rerun.

An entry holds the reduced residual stream of one prompt set under one template and one token
reduction: a float32 ``.npy`` of shape (n_layers + 1, n_items, d_model), layer-major so one layer
reads contiguously. It is keyed by

    <cache>/activations/<model key>/<prompt-set key>/<template>/<reduction>.npy  (+ .json metadata)

where the model key names the weights (name + a hash of source, dtype, revision, seed) and the
prompt-set key includes the file's sha256, so editing a prompt file never reuses stale activations.
The array is filled batch by batch through a memmap (memory stays bounded by one batch) in a partial entry
beside it, ``<reduction>.partial.npy``, and renamed into place only once complete. Each batch is written
there once: after its rows are in the file, ``<reduction>.partial.json`` records them with their sha256.
A run killed or failed midway leaves the partial entry, and the next capture of it resumes: the recorded
batches are verified and only the others are captured (the driver keeps no second copy of them,
medinterp/run.py). ``<reduction>.lock`` (``flock``) gives the partial entry to one process at a time.

Integrity: the metadata stores the array file's full sha256 (hashing runs at about 1 GB/s: 19 ms for a
Gemma-3-270M entry of 20 MB, 0.16 s for 200 MB; docs/benchmarks.md). Every hit is verified before use; an
entry whose file is missing, truncated, altered in place or unreadable, or whose metadata is unreadable,
is reported in one WARNING naming the path, removed, and captured again. Entries written before the
checksum existed (no ``sha256`` in the metadata) are treated as stale and recaptured once: their bytes
cannot be verified against anything. A half-written entry never looks complete: the partial entry has
another name and no entry metadata; its record names only batches already written, and on resume each
recorded batch is checked against its sha256 (:func:`read_partial`: a mismatching batch is captured again,
an unreadable record or array, or one of the wrong shape, is started afresh, each with one WARNING naming
it). :func:`read_entry` is the one reader of entries and :class:`ActivationCapture` the one writer (the UMAP
method's capture units and :func:`cached_activations` use it).
"""
from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from numpy.lib.format import open_memmap
from tqdm.auto import tqdm

from medinterp.capture.images import capture_image_indices, image_batch_order, image_tokens
from medinterp.capture.limits import DEFAULT_BATCH_TOKENS, check_positive_int, prompt_names
from medinterp.capture.residual import batch_order, capture_indices
from medinterp.io import atomic_path, write_json
from medinterp.models import ModelHandle
from medinterp.models.tiny import tiny_build_id
from medinterp.prompts import PromptSet

log = logging.getLogger(__name__)

FORMAT_VERSION = 1  # bump when the meaning of a stored activation changes


def model_key(handle: ModelHandle) -> str:
    """Stable name of the weights: ``<name>-<hash of source, dtype, revision, seed, format>``."""
    s = handle.spec
    weights = handle.source if s.source != "tiny" else tiny_build_id(s.family or "")
    ident = "|".join(map(str, (s.source, weights, s.dtype, s.revision, s.seed, FORMAT_VERSION)))
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


def _mapped(path: Path, meta: dict[str, Any]) -> np.ndarray | str:
    """The array file ``path`` memory-mapped read-only, or why it is not the array ``meta`` describes."""
    try:
        array = np.load(path, mmap_mode="r")
    except (OSError, ValueError) as err:
        return f"is unreadable ({type(err).__name__}: {err})"
    if list(array.shape) != list(meta["shape"]) or array.dtype != np.float32:
        return f"has shape {list(array.shape)} {array.dtype}, expected {meta['shape']} float32"
    return array


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
    array = _mapped(path, meta)
    if isinstance(array, str):
        _drop(path, array)
        return None
    log.debug("activation cache hit: %s", path)
    return array if load else True


def commit_entry(tmp: Path, path: Path, meta: dict[str, Any]) -> None:
    """Write the metadata of the complete array ``tmp`` (with its sha256) for the entry ``path``.

    Called before ``tmp`` is renamed onto ``path``: a crash in between leaves metadata whose checksum
    the old file (if any) does not match, which :func:`read_entry` detects.
    """
    write_json(Path(path).with_suffix(".json"), {**meta, "sha256": file_sha256(Path(tmp))})


def partial_paths(path: Path) -> tuple[Path, Path, Path]:
    """The partial entry being captured for the entry ``path`` (``<reduction>.npy``): its array
    ``<reduction>.partial.npy``, its record ``<reduction>.partial.json`` and its lock file ``<reduction>.lock``."""
    path = Path(path)
    return (path.with_name(f"{path.stem}.partial.npy"), path.with_name(f"{path.stem}.partial.json"),
            path.with_name(f"{path.stem}.lock"))


def rows_sha256(array: np.ndarray, rows: np.ndarray) -> str:
    """The sha256 of the rows ``rows`` of a (layers, items, d) array: the bytes of ``array[:, rows]`` (C order)."""
    return hashlib.sha256(np.ascontiguousarray(array[:, rows]).data).hexdigest()


def _partial_problem(path: Path, why: str) -> None:
    log.warning("partial activation cache entry %s %s; capturing those batches again", path, why)


def read_partial(path: Path, meta: dict[str, Any]) -> tuple[np.ndarray, list[dict[str, Any]]] | None:
    """The partial entry of ``path`` a killed or failed run left, opened for writing: (memmap, its verified
    batches ``{"rows": [...], "sha256": ...}``), or None when there is none to resume.

    None without a word when there is no partial entry or it was captured for other settings; after one WARNING
    naming it when its record or array is unreadable or its array has the wrong shape. A recorded batch whose rows
    do not match their sha256 is left out (one WARNING for all such batches): it is captured again.
    """
    array, record, _ = partial_paths(path)
    if not record.exists() or not array.exists():
        return None
    try:
        stored = json.loads(record.read_text())
        batches = stored["batches"]
        rows = [np.asarray(b["rows"], dtype=np.int64) for b in batches]
        assert all(r.ndim == 1 and isinstance(b["sha256"], str) for r, b in zip(rows, batches))
    except (OSError, ValueError, TypeError, KeyError, AssertionError) as err:
        _partial_problem(array, f"has an unreadable record {record.name} ({type(err).__name__})")
        return None
    if stored.get("meta") != meta:
        return None
    checked = _mapped(array, meta)  # read-only first: opened for writing, a short file would grow
    if isinstance(checked, str):
        _partial_problem(array, checked)
        return None
    out = open_memmap(array, mode="r+")
    n_items = out.shape[1]
    good = [b for r, b in zip(rows, batches)
            if r.size and r.min() >= 0 and r.max() < n_items and rows_sha256(out, r) == b["sha256"]]
    if len(good) < len(batches):
        _partial_problem(array, f"has {len(batches) - len(good)} of {len(batches)} recorded batches that do not match "
                                "their checksum (altered or half-written)")
    return out, good


@dataclass
class _Entry:
    """One template's capture: its prompts, its batches still to capture, and where they go."""

    template: str
    texts: list[str]
    spans: list[tuple[int, int]]
    prompts: list | None  # an image prompt set's prompts (medinterp/capture/images.py); None: a text set
    batches: list[np.ndarray]  # empty: the entry is in the cache
    meta: dict[str, Any]
    path: Path | None  # the cache entry (None: no cache)
    out: np.ndarray | None = None  # rank 0, while capturing
    tmp: Path | None = None  # a private temporary file (another process holds the partial entry)
    record: list[dict[str, Any]] | None = None  # the partial entry's batches (None: not capturing into one)
    filled: np.ndarray | None = None  # (n_items,) bool: rows the partial entry holds


class ActivationCapture:
    """The one writer of the activation cache: every template's prompts as batches (units) that any rank can
    capture, written on rank 0 straight into the entry's memmap, committed (checksum, then rename) when complete.

    An image prompt set (``modality: image``) is captured by medinterp/capture/images.py; its ``reduction`` is the
    token type's read-out name (``tokens-image``, ``tokens-text``, ``tokens-all``; ``image_readout`` there), which
    names its entries as a text reduction does.

    Templates whose verified entry exists (``cached``: rank 0's view, since other nodes may not see the same
    disk) have no batches. Rank 0 calls :meth:`open`, :meth:`persisted` (the units a partial entry already holds),
    :meth:`sink` for every other batch (any order), :meth:`close`, then :meth:`activations`.

    Each batch is written once, into the partial entry (``<reduction>.partial.npy``, see :func:`partial_paths`),
    and recorded with the sha256 of its rows in ``<reduction>.partial.json`` after it is written; a run killed or
    failed midway leaves both, and the next capture of the entry (any batch cut) verifies each recorded batch and
    captures only the rest. An exclusive lock (``<reduction>.lock``, ``flock``) gives the partial entry to one
    process: a second process capturing the same entry at the same time writes a private temporary file instead
    (not resumable: :meth:`sink` says so and the driver checkpoints its batches). Without a cache
    (``cache_dir=None``) batches go into plain arrays, and the driver checkpoints them too.
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
            image = prompt_set.modality == "image"
            batches = ([] if t in cached else image_batch_order(handle, prompts, batch_size, batch_tokens) if image
                       else batch_order(handle, texts, batch_size, batch_tokens, prompt_names(prompts)))
            path = entry_path(cache_dir, handle, prompt_set, t, reduction) if cache_dir is not None else None
            self.entries.append(_Entry(t, texts, spans, list(prompts) if image else None, batches,
                                       entry_meta(handle, prompt_set, t, reduction), path))
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
        if entry.prompts is not None:
            return capture_image_indices(self.handle, entry.prompts, entry.batches[b], image_tokens(self.reduction),
                                         batch_size=self.batch_size, batch_tokens=self.batch_tokens)
        return capture_indices(self.handle, entry.texts, entry.batches[b], self.reduction, entry.spans,
                               batch_size=self.batch_size, batch_tokens=self.batch_tokens)

    def open(self) -> None:
        """Rank 0: the arrays the batches are written into: the partial entry (resumed when one is left), a
        private temporary file when another process holds it, a plain array without a cache."""
        for entry in self.entries:
            if not entry.batches:
                continue
            shape = tuple(entry.meta["shape"])
            if entry.path is None:
                entry.out = np.zeros(shape, dtype=np.float32)
            elif self._lock(entry.path):
                array, record, _ = partial_paths(entry.path)
                resumed = read_partial(entry.path, entry.meta)
                if resumed is None:
                    record.unlink(missing_ok=True)  # before the array is emptied: no record claims rows it lost
                    entry.out, entry.record = open_memmap(array, mode="w+", dtype=np.float32, shape=shape), []
                    write_json(record, {"meta": entry.meta, "batches": []})
                else:
                    entry.out, entry.record = resumed
                entry.filled = np.zeros(shape[1], dtype=bool)
                for batch in entry.record:
                    entry.filled[batch["rows"]] = True
                log.info("capturing %s/%s into %s (%d of %d prompts there already)", entry.meta["prompt_set"],
                         entry.template, entry.path, entry.filled.sum(), shape[1])
            else:
                log.info("another process is capturing %s; capturing into a private file (not resumable)", entry.path)
                entry.tmp = self._stack.enter_context(atomic_path(entry.path))
                entry.out = open_memmap(entry.tmp, mode="w+", dtype=np.float32, shape=shape)

    def _lock(self, path: Path) -> bool:
        """Take the partial entry of ``path`` for this process until :meth:`close` (False: another process has it)."""
        lock = partial_paths(path)[2]
        lock.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o666)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return False
        self._stack.callback(os.close, fd)  # closing the file releases the lock
        return True

    def persisted(self) -> set[int]:
        """Rank 0, after :meth:`open`: the units whose every row a resumed partial entry holds (verified)."""
        return {u for u, (e, b) in enumerate(self.units)
                if self.entries[e].filled is not None and self.entries[e].filled[self.entries[e].batches[b]].all()}

    def sink(self, i: int, acts: np.ndarray) -> bool:
        """Rank 0: write batch ``i``; True when it is persisted (in the partial entry, recorded with its sha256),
        False when it is only in memory or a private file (a restart needs it from elsewhere)."""
        e, b = self.units[i]
        entry, rows = self.entries[e], self.entries[e].batches[b]
        entry.out[:, rows] = acts
        if entry.record is None:
            return False
        entry.out.flush()  # the rows are in the file before the record names them
        entry.record.append({"rows": rows.tolist(), "sha256": rows_sha256(entry.out, rows)})
        write_json(partial_paths(entry.path)[1], {"meta": entry.meta, "batches": entry.record})
        entry.filled[rows] = True
        return True

    def close(self, ok: bool) -> None:
        """Rank 0: move complete entries into place (metadata, with the sha256, first: a crash in between leaves
        metadata the old file cannot match) and release the locks; on failure keep the partial entries (a rerun
        resumes them) and remove the private temporary files."""
        if not ok:
            for entry in self.entries:
                if entry.record is not None:
                    entry.out.flush()
            self._stack.__exit__(RuntimeError, RuntimeError("capture failed"), None)
            return
        with self._stack:  # on leaving: private files renamed into place (removed on an error), locks released
            for entry in self.entries:
                if entry.record is not None:
                    self._commit_partial(entry)
                elif entry.tmp is not None:
                    entry.out.flush()
                    entry.out = None
                    commit_entry(entry.tmp, entry.path, entry.meta)

    @staticmethod
    def _commit_partial(entry: _Entry) -> None:
        """Checksum the complete partial entry, rename it onto the entry, drop its record."""
        array, record, _ = partial_paths(entry.path)
        if not entry.filled.all():
            raise RuntimeError(f"activation capture of {entry.path}: {int((~entry.filled).sum())} prompts were never "
                               "captured")
        entry.out.flush()
        entry.out = None
        commit_entry(array, entry.path, entry.meta)
        os.replace(array, entry.path)
        record.unlink()

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
        todo = sorted(set(range(len(cap.units))) - cap.persisted())
        for i in tqdm(todo, desc=f"{prompt_set.domain}/{template}", unit="batch", leave=False):
            cap.sink(i, cap.run(i))
        ok = True
    finally:
        cap.close(ok)
    return cap.activations()[0]
