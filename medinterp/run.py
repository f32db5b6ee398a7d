"""The one driver: run any method on one cell, in one process or many (a single process is a world of one).

(Being rebuilt in issue 15; :func:`run_method` is the stable single-process entry point tests and benches use.)
"""
from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from medinterp.capture.limits import DEFAULT_MAX_BATCH_TOKENS
from medinterp.methods import MethodResult
from medinterp.models import ModelHandle
from medinterp.prompts import PromptSet


def run_method(method: Any, handle: ModelHandle, prompt_set: PromptSet, templates: Sequence[str],
               labelings: Sequence[str] | None = None, *, reduction: str = "last", batch_size: int = 32,
               max_batch_tokens: int | None = DEFAULT_MAX_BATCH_TOKENS, cache_dir: Path | None = None) -> MethodResult:
    """Run ``method`` on (``handle``, ``prompt_set``, ``templates``) in this process and return its result."""
    from medinterp.distributed.work import make_work
    from medinterp.methods import ModelMethod, stack_points

    capture: dict[str, Any] = {}
    if not isinstance(method, ModelMethod):
        capture = dict(points=stack_points(prompt_set, templates), reduction=reduction, batch_size=batch_size,
                       cache_dir=cache_dir, max_batch_tokens=max_batch_tokens, cached=set())
    work = make_work(method, handle, prompt_set, templates, labelings, **capture)
    results: dict[str, Any] = {}
    if capture:
        work.open()
    for unit in work.units:
        if capture:
            work.sink(unit, work.run(unit))
        else:
            results[unit] = work.run(unit)
    if capture:
        work.close(True)
    return work.finish(results)
