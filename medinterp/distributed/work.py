"""Each method's work as units (prompt batches) that any rank can run, and the step that turns them into results.

:class:`Work` is what :func:`medinterp.pipeline.run_cell` drives, the same way under every strategy:
``units`` (ids, the same on every rank), ``run(unit)`` (on whichever rank owns it), ``finish(results)``
(rank 0, with every unit's result). The per-method seams:

- ``umap`` (:class:`CaptureWork`): a unit is one batch of one template's prompts; its result is the
  batch's reduced residual stream, written on rank 0 into the template's activation-cache memmap as it
  arrives (never the whole cache in memory); ``finish`` runs the method on the stacked activations.
- ``saliency``, ``ablation``, ``patching`` (:class:`SplitMethodWork`): the methods' own ``prepare`` /
  ``run_unit`` / ``finish`` (per-prompt gradient sums; per-prompt KL, Δlog p and answers per block, the
  judge on rank 0; per-pair logit differences).
"""
from __future__ import annotations

import contextlib
import inspect
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from medinterp.capture import batch_order, capture_indices
from medinterp.capture.cache import commit_entry, entry_meta, entry_path, read_entry
from medinterp.capture.limits import DEFAULT_MAX_BATCH_TOKENS, check_positive_int, prompt_names
from medinterp.io import atomic_path
from medinterp.methods import MethodResult, Points, stack_activations
from medinterp.models import ModelHandle
from medinterp.prompts import PromptSet

log = logging.getLogger(__name__)


class Work:
    """Units of one method on one cell (see the module docstring)."""

    units: list[str]

    def run(self, unit: str) -> Any:
        raise NotImplementedError

    def finish(self, results: dict[str, Any]) -> MethodResult:
        raise NotImplementedError


def _unit(i: int) -> str:
    return f"b{i:05d}"


# --------------------------------------------------------------------------------------------------
# Model methods with a prepare / run_unit / finish split (saliency, ablation, patching)
# --------------------------------------------------------------------------------------------------
class SplitMethodWork(Work):
    """A method that defines ``prepare``, ``run_unit`` and ``finish`` itself."""

    def __init__(self, method: Any, handle: ModelHandle, prompt_set: PromptSet, templates: Sequence[str],
                 labelings: Sequence[str] | None) -> None:
        self.method, self.handle = method, handle
        self.state = method.prepare(handle, prompt_set, templates, labelings)
        self.units = [_unit(i) for i in range(self.state.n_units)]

    def run(self, unit: str) -> Any:
        return self.method.run_unit(self.handle, self.state, int(unit[1:]))

    def finish(self, results: dict[str, Any]) -> MethodResult:
        return self.method.finish(self.handle, self.state, [results[u] for u in self.units])


# --------------------------------------------------------------------------------------------------
# Activation capture (umap)
# --------------------------------------------------------------------------------------------------
@dataclass
class _Template:
    template: str
    texts: list[str]
    spans: list[tuple[int, int]]
    batches: list[np.ndarray]
    meta: dict[str, Any]
    path: Path | None  # the cache entry (None: no cache)
    out: np.ndarray | None = None  # filled on rank 0
    tmp: Any = field(default=None, repr=False)


class CaptureWork(Work):
    """Capture the residual stream of every template's prompts, batch by batch, into the activation cache.

    Templates already in the cache are read from it, not captured (the caller passes ``cached``: rank 0's
    view of the cache, broadcast, since other nodes may not see the same disk). On rank 0 each arriving
    batch goes straight into the template's memmap (a temporary file renamed into place when complete),
    or into a plain array when there is no cache.
    """

    def __init__(self, method: Any, handle: ModelHandle, prompt_set: PromptSet, templates: Sequence[str],
                 labelings: Sequence[str] | None, points: Points, reduction: str, batch_size: int,
                 cache_dir: Path | None, cached: set[str], store: Any = None,
                 max_batch_tokens: int | None = DEFAULT_MAX_BATCH_TOKENS) -> None:
        check_positive_int("batch_size", batch_size)
        self.method, self.handle, self.points, self.labelings = method, handle, points, labelings
        self.store = store  # rank 0: per-layer checkpoints of the statistics stage (methods that take one)
        self.reduction, self.cache_dir = reduction, cache_dir
        self.templates: list[_Template] = []
        self.units: list[str] = []
        for ti, t in enumerate(templates):
            prompts = prompt_set.prompts(t)
            texts, spans = [p.text for p in prompts], [p.term_span for p in prompts]
            meta = entry_meta(handle, prompt_set, t, reduction)
            path = entry_path(cache_dir, handle, prompt_set, t, reduction) if cache_dir is not None else None
            batches = [] if t in cached else batch_order(handle, texts, batch_size, max_batch_tokens,
                                                         prompt_names(prompts))
            self.templates.append(_Template(t, texts, spans, batches, meta, path))
            self.units += [f"t{ti:03d}-b{bi:05d}" for bi in range(len(batches))]

    @staticmethod
    def cached_templates(handle: ModelHandle, prompt_set: PromptSet, templates: Sequence[str], reduction: str,
                         cache_dir: Path | None) -> set[str]:
        """Templates whose complete cache entry exists and passes its checksum (checked on rank 0; a damaged
        entry is reported and removed, see medinterp.capture.cache.read_entry)."""
        if cache_dir is None:
            return set()
        return {t for t in templates if read_entry(entry_path(cache_dir, handle, prompt_set, t, reduction),
                                                   entry_meta(handle, prompt_set, t, reduction), load=False)}

    def _split(self, unit: str) -> tuple[_Template, np.ndarray]:
        t, b = unit.split("-")
        tpl = self.templates[int(t[1:])]
        return tpl, tpl.batches[int(b[1:])]

    def run(self, unit: str) -> np.ndarray:
        tpl, idx = self._split(unit)
        return capture_indices(self.handle, tpl.texts, idx, self.reduction, tpl.spans)

    def open(self) -> None:
        """Rank 0: the arrays the batches are written into."""
        stack = contextlib.ExitStack()
        self._stack = stack
        for tpl in self.templates:
            if not tpl.batches:
                continue
            shape = tuple(tpl.meta["shape"])
            if tpl.path is None:
                tpl.out = np.zeros(shape, dtype=np.float32)
            else:
                tpl.tmp = stack.enter_context(atomic_path(tpl.path))
                tpl.out = np.lib.format.open_memmap(tpl.tmp, mode="w+", dtype=np.float32, shape=shape)

    def sink(self, unit: str, acts: np.ndarray) -> None:
        tpl, idx = self._split(unit)
        tpl.out[:, idx] = acts

    def close(self, ok: bool) -> None:
        """Rank 0: flush the memmaps and move complete cache entries into place (metadata first)."""
        for tpl in self.templates:
            if tpl.tmp is not None and ok:
                tpl.out.flush()
                tpl.out = None
                commit_entry(tpl.tmp, tpl.path, tpl.meta)  # metadata (with the array's sha256) before the rename
        if ok:
            self._stack.close()
        else:
            self._stack.__exit__(RuntimeError, RuntimeError("capture failed"), None)

    def activations(self) -> np.ndarray:
        """Rank 0: (n_layers + 1, N, D) for all templates, template-major (cache entries memory-mapped)."""
        arrays = []
        for tpl in self.templates:
            if tpl.path is not None:
                arrays.append(np.load(tpl.path, mmap_mode="r"))
            else:
                arrays.append(tpl.out)
        return stack_activations(arrays)

    def finish(self, results: dict[str, Any]) -> MethodResult:
        acts = self.activations()
        log.info("%s: %d points × %d read-outs × d=%d; running %s", self.handle.name, len(self.points), acts.shape[0],
                 acts.shape[2], self.method.name)
        if self.store is not None and "store" in inspect.signature(self.method.run).parameters:
            return self.method.run(acts, self.points, self.labelings, store=self.store)
        return self.method.run(acts, self.points, self.labelings)


def make_work(method: Any, handle: ModelHandle, prompt_set: PromptSet, templates: Sequence[str],
              labelings: Sequence[str] | None, **capture: Any) -> Work:
    """The :class:`Work` of ``method`` (``capture``: the CaptureWork arguments for activation methods)."""
    from medinterp.methods import ModelMethod

    if not isinstance(method, ModelMethod):
        return CaptureWork(method, handle, prompt_set, templates, labelings, **capture)
    if all(hasattr(method, a) for a in ("prepare", "run_unit", "finish")):
        return SplitMethodWork(method, handle, prompt_set, templates, labelings)
    return _WholeMethod(method, handle, prompt_set, templates, labelings)


class _WholeMethod(Work):
    """A model method without a split: one unit, run on every rank (it must not need data parallelism)."""

    def __init__(self, method, handle, prompt_set, templates, labelings) -> None:
        self.args = (handle, prompt_set, templates, labelings)
        self.method = method
        self.units = ["all"]

    def run(self, unit: str) -> MethodResult:
        return self.method.run_model(*self.args)

    def finish(self, results: dict[str, Any]) -> MethodResult:
        return results["all"]


__all__ = ["CaptureWork", "SplitMethodWork", "Work", "make_work"]
