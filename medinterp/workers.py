"""One pool of worker processes per run: UMAP's numba code compiles once per worker, not once per cell.

UMAP's first fit in a fresh process compiles numba code that numba does not cache on disk (7.4 s on the
2-core machine, ~29 s on the H200 host). joblib's ``Parallel`` keeps its workers only while they are
busy within 300 s, and any other ``Parallel`` call with other settings replaces them. The pools here are
medinterp's own: kept alive for the whole process (every cell of a multirun, every layer), each worker
runs ``warm_up`` once when it starts, and each limits its BLAS/OpenMP threads to ``cores // n_jobs`` as
joblib's loky backend does (the same kernels, hence the same numbers, as the ``Parallel`` it replaces).

On Linux a worker dies with its parent (``PR_SET_PDEATHSIG``): a run killed with SIGKILL leaves no worker behind.

:func:`imap` is the order-preserving map the driver uses; :func:`start` spawns the workers early so they
compile while the caller does something else (e.g. captures activations).
"""
from __future__ import annotations

import atexit
import ctypes
import multiprocessing.util
import os
import signal
import sys
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future
from typing import Any, TypeVar

from joblib.externals.loky import cpu_count
from joblib.externals.loky.process_executor import BrokenProcessPool, ProcessPoolExecutor

from medinterp.errors import MedinterpError

T = TypeVar("T")
THREAD_VARS = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "BLIS_NUM_THREADS",
               "VECLIB_MAXIMUM_THREADS", "NUMBA_NUM_THREADS", "NUMEXPR_NUM_THREADS")  # joblib's list
PR_SET_PDEATHSIG = 1  # linux/prctl.h
_pools: dict[tuple[int, Callable[[], None] | None], ProcessPoolExecutor] = {}


def worker_env(n_jobs: int) -> dict[str, str]:
    """Each worker's thread limits: ``cores // n_jobs`` (at least 1) unless the parent's environment sets them."""
    threads = max(cpu_count() // n_jobs, 1)
    env = {var: os.environ.get(var, str(threads)) for var in THREAD_VARS}
    if "ENABLE_IPC" not in os.environ:
        env["ENABLE_IPC"] = "1"  # TBB schedulers coordinate across processes
    return env


def _die_with_parent() -> None:
    """Linux: ask the kernel to SIGKILL this worker when its parent dies, so a run killed with SIGKILL (the
    out-of-memory killer, a scheduler's hard limit) leaves no worker computing for nobody. Elsewhere a no-op
    (loky's own checks then end idle workers)."""
    if not sys.platform.startswith("linux"):
        return
    parent = os.getppid()
    try:
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    except (OSError, AttributeError):  # no prctl in this libc: leave it to loky
        return
    if os.getppid() != parent:  # the parent died before the request: nobody is left to wait for
        os._exit(0)


def _init_worker(warm_up: Callable[[], None] | None) -> None:
    _die_with_parent()
    if warm_up is not None:
        warm_up()


def start(n_jobs: int, warm_up: Callable[[], None] | None = None) -> ProcessPoolExecutor:
    """The pool of ``n_jobs`` workers that ran ``warm_up`` (a picklable module-level function) once each.

    The first call spawns them (and returns at once: they warm up in the background); later calls with
    the same arguments return the same pool, for the life of the process.
    """
    if int(n_jobs) < 2:
        raise MedinterpError(f"workers: a pool needs n_jobs >= 2; got {n_jobs} (n_jobs <= 1 runs in this process)")
    key = (int(n_jobs), warm_up)
    if key not in _pools:
        _pools[key] = ProcessPoolExecutor(max_workers=int(n_jobs), initializer=_init_worker, initargs=(warm_up,),
                                          env=worker_env(int(n_jobs)))
        _pools[key].submit(int)  # loky spawns all its workers at the first submission
    return _pools[key]


def imap(fn: Callable[..., T], args: Iterable[tuple[Any, ...]], n_jobs: int,
         warm_up: Callable[[], None] | None = None) -> Iterator[T]:
    """``fn(*a)`` for each ``a`` in ``args``, yielded in the order of ``args``.

    ``n_jobs <= 1``: one after another in this process (``warm_up`` is not needed there: the first call
    compiles). Otherwise on :func:`start`'s pool, with at most ``2 * n_jobs`` calls in flight so that
    large arguments are not all pickled at once. A worker's exception is raised here, in order.
    """
    if n_jobs <= 1:
        for a in args:
            yield fn(*a)
        return
    pool = start(n_jobs, warm_up)
    pending: deque[Future] = deque()
    try:
        for a in args:
            pending.append(pool.submit(fn, *a))
            if len(pending) >= 2 * n_jobs:
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()
    except BrokenProcessPool:  # a worker died (e.g. out of memory): the next call starts a fresh pool
        _pools.pop((int(n_jobs), warm_up), None)
        raise
    finally:
        for future in pending:
            future.cancel()


def shutdown() -> None:
    """Stop every pool (at exit; tests that want fresh workers)."""
    while _pools:
        _, pool = _pools.popitem()
        pool.shutdown(wait=True)


atexit.register(shutdown)
# In a process that is itself a multiprocessing/loky worker (a cell under Hydra's joblib launcher), multiprocessing
# joins the process's children BEFORE the atexit handlers run, and loky retires a worker whose memory grew without
# shutting down the executors inside it: the pools must stop first, at a multiprocessing finalizer (priority >= 0)
# that runs before those of the pools' own queues (priority 10: their feeder threads must still send the sentinels).
multiprocessing.util.Finalize(None, shutdown, exitpriority=100)  # before the queues (10) close
