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


PARENT = """
import os, sys, time
sys.path[:0] = {paths!r}
from medinterp import workers
import test_workers
pids = sorted({{r[1] for r in workers.imap(test_workers.report, [(0.2, i) for i in range(4)], 2, test_workers.warm_up)}})
print(" ".join(map(str, pids)), flush=True)
time.sleep(60)
"""


def alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(")")[-1].split()[0] != "Z"  # a zombie has exited
    except FileNotFoundError:
        return False


@pytest.mark.skipif(not os.path.isdir("/proc"), reason="reads /proc (Linux)")
def test_workers_exit_when_their_parent_is_killed():
    """A run killed with SIGKILL (out-of-memory killer, a scheduler's hard limit) leaves no worker behind
    burning CPU: each worker asks the kernel for SIGKILL when its parent dies (prctl PR_SET_PDEATHSIG)."""
    import signal
    import subprocess
    import sys

    code = PARENT.format(paths=[os.path.dirname(__file__), os.path.dirname(os.path.dirname(__file__))])
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    pids = [int(p) for p in proc.stdout.readline().split()]
    assert len(pids) == 2 and all(alive(p) for p in pids)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    deadline = time.time() + 10
    while any(alive(p) for p in pids) and time.time() < deadline:
        time.sleep(0.1)
    assert not any(alive(p) for p in pids), "workers outlived their killed parent"


def pool_in_worker() -> list[int]:
    """Run in a loky worker (as under Hydra's joblib launcher): start a pool of our own inside it, and make loky's
    memory-leak check retire this worker after its next task (the path that skips loky's nested-executor shutdown)."""
    from joblib.externals.loky import process_executor

    process_executor._MEMORY_LEAK_CHECK_DELAY, process_executor._MAX_MEMORY_LEAK_SIZE = 0.0, -(10 ** 15)
    return sorted({r[1] for r in workers.imap(report, [(0.1, i) for i in range(4)], 2, warm_up)})


NESTED = """
import sys
sys.path[:0] = {paths!r}
from joblib.externals.loky import get_reusable_executor
import test_workers
executor = get_reusable_executor(max_workers=1)
for _ in range(2):  # the first task sets the worker's reference memory, the second retires it ("leak")
    print(executor.submit(test_workers.pool_in_worker).result(), flush=True)
executor.shutdown(wait=True)  # a retired worker exits through multiprocessing's exit, which joins its children
print("exited", flush=True)
"""


def test_a_worker_process_holding_a_pool_can_exit():
    """Under Hydra's joblib launcher (`make map MAP_JOBS=2`) a cell runs in a loky worker, which loky may retire
    (its memory-leak check) or shut down; multiprocessing then joins the worker's children before the interpreter's
    atexit handlers run, so the pool must be shut down by a multiprocessing finalizer, not atexit alone (this hung
    `make map` before)."""
    import subprocess
    import sys

    code = NESTED.format(paths=[os.path.dirname(__file__), os.path.dirname(os.path.dirname(__file__))])
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert proc.stdout.splitlines()[-1:] == ["exited"], proc.stdout + proc.stderr[-2000:]
