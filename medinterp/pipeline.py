"""One cell of the map: capture a domain's activations and run a method on them, into a run folder.

This is the library half of ``runners/map.py``: it takes built objects (a loaded model, a prompt set, a
method instance, a writer) and returns the summary; the runner only composes config and builds them.
"""
from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from medinterp.capture.cache import model_key
from medinterp.capture.limits import DEFAULT_MAX_BATCH_TOKENS, check_positive_int
from medinterp.distributed.resume import Checkpoints
from medinterp.distributed.sharded import run_units
from medinterp.distributed.strategy import Strategy, StrategyConfig
from medinterp.distributed.work import CaptureWork, make_work
from medinterp.methods import MethodResult, ModelMethod, Points, stack_points
from medinterp.models import ModelHandle
from medinterp.plots import metric_curves, umap_grid
from medinterp.prompts import PromptSet
from medinterp.provenance import versions
from medinterp.results import RunWriter

log = logging.getLogger(__name__)

CURVE_METRICS = {
    "numeric": ("anisotropy", "r2_raw", "r2_umap", "discontinuity"),
    "categorical": ("silhouette_umap", "silhouette_raw"),
}
METHOD_CURVES = {  # model methods: one panel per metric
    "saliency": ("grad_block", "grad_attn", "grad_mlp"),
    "ablation": ("kl", "dlogp", "judge_score"),
    "patching": ("p_resid_diff", "p_resid_last", "p_attn", "p_mlp"),
}


def run_cell(handle: ModelHandle, prompt_set: PromptSet, method: Any, writer: RunWriter | None, templates: Sequence[str],
             labelings: Sequence[str] | None = None, reduction: str = "last", batch_size: int = 32,
             cache_dir: Path | None = None, plots: bool = True, strategy: Strategy | None = None,
             checkpoints: Checkpoints | None = None,
             max_batch_tokens: int | None = DEFAULT_MAX_BATCH_TOKENS) -> dict[str, Any] | None:
    """Capture (or load) activations for ``templates``, run ``method``, write rows, figures and summary.

    Under a data-parallel ``strategy`` (ddp, zero3) every rank calls this: the method's prompt batches are
    shared out across ranks (:mod:`medinterp.distributed.sharded`), the per-prompt results gathered on rank
    0, and only rank 0 computes statistics, writes (``writer`` may be None elsewhere) and returns the
    summary; the other ranks return None. ``checkpoints`` (rank 0) keeps every finished batch, so a
    killed run started again skips them (:mod:`medinterp.distributed.resume`). ``batch_size`` and
    ``max_batch_tokens`` (prompts and padded tokens per capture forward, medinterp/capture/limits.py) are
    checked even when every activation comes from the cache, since the summary records them.
    """
    check_positive_int("batch_size", batch_size)
    check_positive_int("max_batch_tokens", max_batch_tokens, allow_none=True)
    strategy = strategy or Strategy(StrategyConfig())
    checkpoints = checkpoints or Checkpoints(None)
    rank0 = strategy.is_rank_zero
    timings: dict[str, float] = {}
    if getattr(method, "needs_items", True):  # every method but patching reads labelled items
        prompt_set.require_items(f"method={method.name}")
    points = stack_points(prompt_set, templates)
    t0 = time.perf_counter()
    capture_args: dict[str, Any] = {}
    if not isinstance(method, ModelMethod):  # activation methods: capture (or load) the residual stream first
        cached = CaptureWork.cached_templates(handle, prompt_set, templates, reduction, cache_dir) if rank0 else None
        capture_args = dict(points=points, reduction=reduction, batch_size=batch_size, cache_dir=cache_dir,
                            max_batch_tokens=max_batch_tokens,
                            store=checkpoints if checkpoints.enabled else None,
                            cached=strategy.broadcast(cached))
    work = make_work(method, handle, prompt_set, templates, labelings, **capture_args)
    done = strategy.broadcast(sorted(checkpoints.done() & set(work.units)) if rank0 else None)
    todo = [u for u in work.units if u not in set(done)]
    results: dict[str, Any] = {}
    capturing = isinstance(work, CaptureWork)

    def sink(unit: str, result: Any) -> None:  # rank 0: every finished batch, as it arrives
        checkpoints.save(unit, result)
        if capturing:
            work.sink(unit, result)
        else:
            results[unit] = result

    log.info("%s/%s: %s, %d batches (%d resumed from checkpoints) over %d rank(s)", handle.name, prompt_set.domain,
             method.name, len(work.units), len(done), strategy.world_size)
    ok = False
    try:
        if rank0 and capturing:
            work.open()
        if rank0:
            for unit in done:
                (work.sink if capturing else results.__setitem__)(unit, checkpoints.load(unit))
        run_units(strategy, todo, work.run, sink, desc=f"{method.name} {handle.name}/{prompt_set.domain}")
        ok = True
    finally:
        if rank0 and capturing:
            work.close(ok)
    if not rank0:
        return None
    if capturing:
        timings["capture_s"] = time.perf_counter() - t0
        t0 = time.perf_counter()
    result: MethodResult = work.finish(results)
    timings["method_s"] = time.perf_counter() - t0
    rows = result.rows(handle.name, prompt_set.domain, method.name)
    writer.add_rows(rows)
    writer.add_item_rows(result.item_rows(handle.name, prompt_set.domain, method.name))
    t0 = time.perf_counter()
    title = f"{handle.name} · {prompt_set.domain} · {method.name}"
    if plots and method.name in METHOD_CURVES:
        if any(r.metric in METHOD_CURVES[method.name] for r in rows):
            writer.add_figure(f"curves_{method.name}", metric_curves(rows, METHOD_CURVES[method.name], title))
    elif plots:
        draw(writer, result, rows, points, labelings or list(points.labels), title)
    timings["plots_s"] = time.perf_counter() - t0
    summary = {
        "model": {"name": handle.name, "source": handle.source, "key": model_key(handle), "family": handle.parts.adapter.family,
                  "n_layers": handle.n_layers, "d_model": handle.d_model, "device": str(handle.device),
                  "placement": handle.placement},
        "strategy": {"name": strategy.name, "world_size": strategy.world_size, "resumed_batches": len(done),
                     "batches": len(work.units)},
        "domain": prompt_set.domain, "prompt_set": {"key": prompt_set.key, "version": prompt_set.version,
                                                    "sha256": prompt_set.sha256, "source": prompt_set.source},
        "method": method.name, "templates": list(templates), "reduction": reduction, "n_points": len(points),
        "label_counts": label_counts(points, labelings), "timings": timings, "versions": versions(),
        "method_summary": result.artifacts.get("summary", {}),
    }
    return summary


def label_counts(points: Points, labelings: Sequence[str] | None) -> dict[str, dict[str, int]]:
    """Points per class of each categorical/ordinal labeling (reviewers asked for data statistics)."""
    out = {}
    for name in labelings or points.labels:
        if points.kinds[name] != "numeric":
            values, counts = np.unique(points.labels[name].astype(str), return_counts=True)
            out[name] = dict(zip(values.tolist(), counts.tolist()))
    return out


def draw(writer: RunWriter, result: MethodResult, rows, points: Points, labelings: Sequence[str], title: str) -> None:
    """UMAP grids (one per labeling) and metric curves, saved into the run folder."""
    emb = result.artifacts.get("embedding_2d")
    for name in labelings:
        numeric = points.kinds[name] != "categorical"
        if emb is not None:
            writer.add_figure(f"umap_grid_{name}", umap_grid(emb, points.labels[name], f"{title} by {name}", numeric))
    kinds = {"numeric" if points.kinds[n] == "numeric" else "categorical" for n in labelings}
    for kind in sorted(kinds):
        metrics = CURVE_METRICS[kind]
        if any(r.metric in metrics for r in rows):
            writer.add_figure(f"curves_{kind}", metric_curves(rows, metrics, title))
