"""Run a method's units of work (prompt batches) across ranks in lockstep; results come back to rank 0.

Every method cuts its prompts into batches deterministically (the same cut on every rank, and the same
cut as a one-process run). Rank ``r`` of ``W`` takes the to-do batches ``r, r + W, r + 2W, ...``, so
each batch is computed exactly as ``single`` computes it (same prompts, same padding) and the
statistics, computed on rank 0 over the gathered per-prompt arrays, are the same numbers.

Lockstep matters under ZeRO-3: every forward gathers each layer's weights from all ranks (a
collective), so all ranks must run the same number of forward passes. The driver therefore runs
``ceil(n / W)`` rounds on every rank; a rank with no batch left in the last round recomputes the last
batch and drops the result. After each round the results are gathered to rank 0, which hands each to
``sink`` at once (activation batches go straight into a memmap and a resume checkpoint; nothing
accumulates on the other ranks).
"""
from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

from tqdm.auto import tqdm

from medinterp.distributed.strategy import Strategy


def my_units(todo: Sequence[Any], rank: int, world: int) -> list[Any | None]:
    """The units rank ``rank`` runs, round by round; ``None`` marks a padding round (see the module docstring)."""
    rounds = math.ceil(len(todo) / world)
    return [todo[k * world + rank] if k * world + rank < len(todo) else None for k in range(rounds)]


def run_units(strategy: Strategy, todo: Sequence[Any], fn: Callable[[Any], Any], sink: Callable[[Any, Any], None],
              desc: str = "units") -> None:
    """Run ``fn(unit)`` for every unit in ``todo`` across the ranks; rank 0 gets ``sink(unit, result)`` for each.

    Units must be cheap to send (ids); results are pickled to rank 0 once per round.
    """
    if not todo:
        return
    rank, world = strategy.rank, strategy.world_size
    for unit in tqdm(my_units(todo, rank, world), desc=desc, unit="batch", leave=False, disable=rank != 0):
        result = fn(todo[-1] if unit is None else unit)  # a padding round keeps the collectives in step
        gathered = strategy.gather(None if unit is None else (unit, result))
        for item in gathered or ():
            if item is not None:
                sink(*item)
