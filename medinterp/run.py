"""The one driver: run any method on one cell, in one process or many (a single process is a world of one).

Every method is a :class:`medinterp.methods.Method` (prepare / run_unit / finish, optional open / sink / close and
local units). :func:`drive` runs it the same way under every strategy:

1. ``prepare(cell)`` on every rank; the model units are cut the same way on every rank;
2. model units in lockstep: rank ``r`` of ``W`` takes the to-do units ``r, r + W, ...`` (:func:`my_units`), so each
   is computed exactly as a single process computes it. Lockstep matters under ZeRO-3, where every forward gathers
   each layer's weights from all ranks: every rank runs ``ceil(n / W)`` rounds, and a rank with no unit left in
   the last round recomputes the last unit and drops the result. After each round the results are gathered to rank
   0, which hands each to ``sink`` and checkpoints it, unless the method stored it itself (``sink`` returned
   ``PERSISTED``: activation batches go once, into the cache's partial entry);
3. rank 0: local units (no model; e.g. UMAP's per-layer statistics), in the worker pool, each checkpointed;
4. rank 0: ``finish`` with every result, in unit order (every rank, with rank 0's results broadcast, when the
   method's ``finish`` runs the model and the weights are partitioned: ``Method.finish_runs_model``).

Every finished unit is checkpointed (medinterp/resume.py) or stored by its method (``persisted``), so a killed
run started again with the same cell recomputes only the units that had not reached rank 0. :func:`run_cell`
drives a cell and writes its results; :func:`run_method` is the single-process shortcut tests and benches use.
"""
from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from medinterp.capture.limits import DEFAULT_BATCH_TOKENS
from medinterp.cell import Cell
from medinterp.methods import PERSISTED, MethodResult
from medinterp.models import ModelHandle
from medinterp.models.weights import is_partitioned
from medinterp.plots import cell_figures
from medinterp.prompts import PromptSet
from medinterp.resume import Checkpoints
from medinterp.results import RunWriter
from medinterp.workers import imap

log = logging.getLogger(__name__)


def my_units(todo: Sequence[Any], rank: int, world: int) -> list[Any | None]:
    """The units rank ``rank`` runs, round by round; ``None`` marks a padding round (see the module docstring)."""
    rounds = math.ceil(len(todo) / world)
    return [todo[k * world + rank] if k * world + rank < len(todo) else None for k in range(rounds)]


def unit_name(i: int) -> str:
    """A unit's checkpoint name."""
    return f"u{i:05d}"


def drive(cell: Cell, checkpoints: Checkpoints | None = None) -> tuple[MethodResult | None, dict[str, Any]]:
    """Run ``cell.method`` on ``cell`` (every rank calls this); rank 0 gets ``(result, info)``, the others
    ``(None, info)``. ``info``: units, resumed units and timings."""
    method, strategy, handle = cell.method, cell.strategy, cell.handle
    checkpoints = checkpoints or Checkpoints(None)
    rank0 = strategy.is_rank_zero
    t0 = time.perf_counter()
    work = method.prepare(cell)
    n_model, n_local = work.n_units, getattr(work, "n_local_units", 0)
    names = [unit_name(i) for i in range(n_model + n_local)]
    results: list[Any] = [None] * (n_model + n_local)

    def keep(i: int, result: Any, save: bool = True) -> None:  # rank 0: a finished model unit
        kept = method.sink(handle, work, i, result)
        if kept is PERSISTED:  # the method stored it (e.g. in the activation cache): no second copy
            kept = None
        elif save:
            checkpoints.save(names[i], result)
        results[i] = kept

    ok = False
    if rank0:
        method.open(handle, work)
    try:
        stored = checkpoints.done() if rank0 else set()
        saved = [i for i, n in enumerate(names) if n in stored]
        held = sorted(method.persisted(handle, work) - set(saved)) if rank0 else []
        done = set(strategy.broadcast(sorted(saved + held) if rank0 else None))
        log.info("%s: %d units (%d resumed) over %d rank(s)", cell.name, n_model + n_local, len(done),
                 strategy.world_size)
        for i in (i for i in saved if i < n_model):
            keep(i, checkpoints.load(names[i]), save=False)
        todo = [i for i in range(n_model) if i not in done]
        run_units(strategy, todo, lambda i: method.run_unit(handle, work, i), keep, desc=f"{method.name} {cell.name}")
        ok = True
    finally:
        if rank0:
            method.close(handle, work, ok)
    info = {"units": n_model + n_local, "resumed": len(done), "timings": {"units_s": time.perf_counter() - t0}}
    if method.finish_runs_model and is_partitioned(handle.model):  # finish's forwards are collectives: all join
        if n_local:
            raise ValueError(f"{method.name}: a method whose finish runs the model has no local units")
        t0 = time.perf_counter()
        shared = strategy.broadcast(results if rank0 else None)
        result = method.finish(handle, work, shared)
        info["timings"]["finish_s"] = time.perf_counter() - t0
        return (result if rank0 else None), info
    if not rank0:
        return None, info
    t0 = time.perf_counter()
    local = [j for j in range(n_local) if n_model + j not in done]
    for j in set(range(n_local)) - set(local):
        results[n_model + j] = checkpoints.load(names[n_model + j])
    tasks = ((method.local_unit(handle, work, j),) for j in local)
    computed = imap(_call, tasks, method.n_jobs, method.local_warm_up())
    for j, result in zip(local, tqdm(computed, total=len(local), desc=f"{method.name} local units", unit="unit",
                                     leave=False)):
        checkpoints.save(names[n_model + j], result)
        results[n_model + j] = result
    result = method.finish(handle, work, results)
    info["timings"]["finish_s"] = time.perf_counter() - t0
    return result, info


def _call(task: Callable[[], Any]) -> Any:
    return task()


def run_units(strategy: Any, todo: Sequence[int], fn: Callable[[int], Any], sink: Callable[[int, Any], None],
              desc: str = "units") -> None:
    """Run ``fn(unit)`` for every unit in ``todo`` across the ranks; rank 0 gets ``sink(unit, result)`` for each.

    Units must be cheap to send (ids); results are pickled to rank 0 once per round.
    """
    if not todo:
        return
    rank, world = strategy.rank, strategy.world_size
    for unit in tqdm(my_units(todo, rank, world), desc=desc, unit="unit", leave=False, disable=rank != 0):
        result = fn(todo[-1] if unit is None else unit)  # a padding round keeps the collectives in step
        gathered = strategy.gather(None if unit is None else (unit, result))
        for item in gathered or ():
            if item is not None:
                sink(*item)


def run_cell(cell: Cell, writer: RunWriter | None, checkpoints: Checkpoints | None = None, plots: bool = True,
             config: dict[str, Any] | None = None) -> dict[str, Any] | None:
    """Drive ``cell`` and, on rank 0, write its rows, per-item rows, figures and summary (with ``config``, the
    resolved run config) through ``writer``; returns the summary on rank 0, None elsewhere. The checkpoints are
    cleared once the results are written."""
    t0 = time.perf_counter()
    result, info = drive(cell, checkpoints)
    if result is None:
        return None
    h, domain, name = cell.handle.name, cell.prompt_set.domain, cell.method.name
    rows = result.rows(h, domain, name)
    writer.add_rows(rows)
    writer.add_item_rows(result.item_rows(h, domain, name))
    t1 = time.perf_counter()
    if plots:
        labelings = list(cell.labelings) if cell.labelings is not None else None
        for fig_name, fig in cell_figures(name, result, rows, cell.points, labelings,
                                          f"{h} · {domain} · {name}").items():
            writer.add_figure(fig_name, fig)
    timings = {**info["timings"], "plots_s": time.perf_counter() - t1, "total_s": time.perf_counter() - t0}
    summary = {**cell.summary(info["units"], info["resumed"]), "timings": timings,
               "method_summary": result.artifacts.get("summary", {})}
    if config is not None:
        summary["config"] = config
    writer.finish(summary)
    if checkpoints is not None:
        checkpoints.clear()  # the cell is written; its units are no longer needed
    return summary


def run_method(method: Any, handle: ModelHandle, prompt_set: PromptSet, templates: Sequence[str],
               labelings: Sequence[str] | None = None, *, reduction: str = "last", batch_size: int = 32,
               batch_tokens: int | None = DEFAULT_BATCH_TOKENS, cache_dir: Path | None = None) -> MethodResult:
    """Run ``method`` on (``handle``, ``prompt_set``, ``templates``) in this process and return its result."""
    cell = Cell(handle, prompt_set, method, tuple(templates), None if labelings is None else tuple(labelings),
                reduction=reduction, batch_size=batch_size, batch_tokens=batch_tokens, cache_dir=cache_dir)
    return drive(cell)[0]
