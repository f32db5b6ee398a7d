"""Worker processes for rank-0 local units (UMAP's per-layer statistics): one pool, kept alive across cells.

joblib's loky executor is reused by every call in the process, so numba's JIT compile happens once per worker and
run, not once per cell.
"""
from __future__ import annotations

import warnings
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from joblib import Parallel, delayed


def imap(tasks: Iterable[Callable[[], Any]], n_jobs: int = 1) -> Iterator[Any]:
    """The results of zero-argument picklable ``tasks``, in order, computed by ``n_jobs`` worker processes
    (1: in this process)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*n_jobs value.*overridden.*")
        yield from Parallel(n_jobs=n_jobs, return_as="generator")(delayed(task)() for task in tasks)
