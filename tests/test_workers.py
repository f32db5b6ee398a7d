"""medinterp.workers: one pool per run, warmed once per worker, order-preserving map."""
from __future__ import annotations

import os
import time

import pytest

from medinterp import workers
from medinterp.errors import MedinterpError

WARMED: list[int] = []  # in a worker: its pid once per warm-up


def warm_up() -> None:
    WARMED.append(os.getpid())


def report(delay: float, value: int) -> tuple[int, int, int, str | None]:
    """(value, worker pid, warm-ups seen by this worker, its OpenBLAS thread limit) after ``delay`` s."""
    time.sleep(delay)
    return value, os.getpid(), len(WARMED), os.environ.get("OPENBLAS_NUM_THREADS")


def fail(value: int) -> int:
    if value == 2:
        raise ValueError(f"bad value {value}")
    return value


def test_imap_keeps_the_order_and_one_warm_pool_serves_every_call():
    args = [(0.3 if i % 2 == 0 else 0.0, i) for i in range(6)]  # even ones finish last
    first = list(workers.imap(report, args, 2, warm_up))
    assert [r[0] for r in first] == list(range(6))
    assert all(r[2] == 1 for r in first)  # each worker warmed up exactly once
    assert {r[3] for r in first} == {workers.worker_env(2)["OPENBLAS_NUM_THREADS"]}  # BLAS threads as joblib sets them
    second = list(workers.imap(report, [(0.0, 7)] * 4, 2, warm_up))
    assert {r[1] for r in second} <= {r[1] for r in first} and all(r[2] == 1 for r in second)  # same workers
    assert workers.start(2, warm_up) is workers.start(2, warm_up)


def test_imap_in_this_process_and_errors():
    assert [r[:2] for r in workers.imap(report, [(0.0, 1), (0.0, 2)], 1)] == [(1, os.getpid()), (2, os.getpid())]
    done = []
    with pytest.raises(ValueError, match="bad value 2"):
        for value in workers.imap(fail, [(i,) for i in range(5)], 2):
            done.append(value)
    assert done == [0, 1]  # results before the failure arrive, in order
    with pytest.raises(MedinterpError, match="a pool needs n_jobs >= 2; got 1"):
        workers.start(1)
