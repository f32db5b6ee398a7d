"""A capture stopped midway resumes from its partial cache entry: only the missing batches run again, each batch
is written once, and a damaged partial entry (altered rows, truncated array, unreadable record) is detected."""
from __future__ import annotations

import fcntl
import json
import logging
import os

import numpy as np
import pytest

from medinterp.capture.cache import ActivationCapture, cached_activations, entry_path, partial_paths, read_entry
from medinterp.capture.cache import entry_meta
from medinterp.capture.limits import DEFAULT_BATCH_TOKENS
from medinterp.prompts import load_prompt_set

BATCH = 16  # prompts per batch: the first drugs template gives a dozen batches


@pytest.fixture(scope="module")
def captured(tiny_handles):
    """(handle, prompt set, template, its activations captured without a cache, number of batches)."""
    h, ps = tiny_handles["llama"], load_prompt_set("drugs")
    t = ps.templates[0].id
    fresh = np.array(cached_activations(h, ps, t, batch_size=BATCH))
    n = len(ActivationCapture(h, ps, [t], "last", BATCH, DEFAULT_BATCH_TOKENS, None, set()).units)
    assert n >= 6
    return h, ps, t, fresh, n


@pytest.fixture()
def setup(captured, tmp_path):
    """(handle, prompt set, template, entry path under tmp_path, fresh array, number of batches)."""
    h, ps, t, fresh, n = captured
    return h, ps, t, entry_path(tmp_path, h, ps, t, "last"), fresh, n


class Stop(Exception):
    pass


def count_runs(monkeypatch, fail_at: int | None = None) -> list[int]:
    """Record every batch ActivationCapture.run captures; raise Stop on the ``fail_at``-th (0-based) call."""
    calls: list[int] = []
    run = ActivationCapture.run

    def counted(self, i):
        if fail_at is not None and len(calls) == fail_at:
            raise Stop
        calls.append(i)
        return run(self, i)

    monkeypatch.setattr(ActivationCapture, "run", counted)
    return calls


def interrupted(setup, tmp_path, monkeypatch, k: int) -> None:
    """A capture into the cache that fails after ``k`` batches: the partial entry holds them."""
    h, ps, t, path, _, _ = setup
    with monkeypatch.context() as m:
        count_runs(m, fail_at=k)
        with pytest.raises(Stop):
            cached_activations(h, ps, t, batch_size=BATCH, cache_dir=tmp_path)
    array, record, _ = partial_paths(path)
    assert not path.exists() and array.exists() and len(json.loads(record.read_text())["batches"]) == k


def resume(setup, tmp_path, monkeypatch) -> tuple[np.ndarray, list[int]]:
    h, ps, t, path, fresh, _ = setup
    calls = count_runs(monkeypatch)
    again = np.array(cached_activations(h, ps, t, batch_size=BATCH, cache_dir=tmp_path))
    np.testing.assert_array_equal(again, fresh)  # the same bytes as one uninterrupted capture
    array, record, _ = partial_paths(path)
    assert not array.exists() and not record.exists()  # committed: checksum, rename, record dropped
    assert read_entry(path, entry_meta(h, ps, t, "last"), load=False) is True
    return again, calls


def test_a_stopped_capture_resumes_with_only_the_missing_batches(setup, tmp_path, monkeypatch, caplog):
    n = setup[5]
    interrupted(setup, tmp_path, monkeypatch, 5)
    with caplog.at_level(logging.WARNING):
        _, calls = resume(setup, tmp_path, monkeypatch)
    assert sorted(calls) == list(range(5, n)) and not caplog.records


def test_a_resumed_capture_with_another_batch_cut_keeps_the_batches_it_holds_whole(setup, tmp_path, monkeypatch):
    """The record names rows, not batch numbers: a capture cut into batches of 8 skips every batch whose rows the
    recorded batches of 16 hold (other rows are captured in other company: equal up to padding, 1e-5)."""
    h, ps, t, path, fresh, _ = setup
    interrupted(setup, tmp_path, monkeypatch, 3)
    held = {r for b in json.loads(partial_paths(path)[1].read_text())["batches"] for r in b["rows"]}
    calls = count_runs(monkeypatch)
    cap = ActivationCapture(h, ps, [t], "last", 8, DEFAULT_BATCH_TOKENS, tmp_path, set())
    again = cached_activations(h, ps, t, batch_size=8, cache_dir=tmp_path)
    np.testing.assert_array_equal(again[:, sorted(held)], fresh[:, sorted(held)])  # the held rows, as written
    np.testing.assert_allclose(again, fresh, rtol=1e-4, atol=1e-6)
    skipped = {u for u in range(len(cap.units)) if set(cap.entries[0].batches[u].tolist()) <= held}
    assert len(held) == 3 * BATCH and skipped and sorted(calls) == sorted(set(range(len(cap.units))) - skipped)


def test_altered_rows_of_a_recorded_batch_are_captured_again_with_a_warning(setup, tmp_path, monkeypatch, caplog):
    h, ps, t, path, fresh, n = setup
    interrupted(setup, tmp_path, monkeypatch, 5)
    array = partial_paths(path)[0]
    batches = json.loads(partial_paths(path)[1].read_text())["batches"]
    part = np.load(array, mmap_mode="r+")
    part[2, batches[1]["rows"][0], 3] += 1.0  # one value of recorded batch 1 (a bit flip, a torn write)
    part.flush()
    del part
    with caplog.at_level(logging.WARNING):
        _, calls = resume(setup, tmp_path, monkeypatch)
    [warning] = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert str(array) in warning and "1 of 5 recorded batches" in warning
    assert sorted(calls) == [1, *range(5, n)]


@pytest.mark.parametrize("damage, words", [
    (lambda array, record: os.truncate(array, os.path.getsize(array) // 2), "is unreadable"),
    (lambda array, record: record.write_text('{"meta": '), "has an unreadable record"),
    (lambda array, record: record.write_text('{"batches": [{"rows": "x"}]}'), "has an unreadable record"),
])
def test_a_damaged_partial_entry_is_started_afresh_with_a_warning(setup, tmp_path, monkeypatch, caplog, damage, words):
    n = setup[5]
    interrupted(setup, tmp_path, monkeypatch, 5)
    array, record, _ = partial_paths(setup[3])
    damage(array, record)
    with caplog.at_level(logging.WARNING):
        _, calls = resume(setup, tmp_path, monkeypatch)
    [warning] = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert str(array) in warning and words in warning
    assert sorted(calls) == list(range(n))


def test_a_partial_entry_never_reads_as_the_entry(setup, tmp_path, monkeypatch):
    """Stopped after every batch but before the commit: no entry exists; the next capture commits it at once."""
    h, ps, t, path, fresh, n = setup
    interrupted(setup, tmp_path, monkeypatch, n - 1)
    assert ActivationCapture.cached(h, ps, [t], "last", tmp_path) == set()
    _, calls = resume(setup, tmp_path, monkeypatch)
    assert calls == [n - 1]


def test_a_second_process_capturing_the_same_entry_writes_a_private_file(setup, tmp_path, monkeypatch):
    """While another process holds the partial entry's lock, a capture writes its own temporary file, says its
    batches are not persisted (the driver checkpoints them) and leaves the other's partial entry alone."""
    h, ps, t, path, fresh, n = setup
    interrupted(setup, tmp_path, monkeypatch, 2)
    array, record, lock = partial_paths(path)
    before = record.read_text()
    fd = os.open(lock, os.O_RDWR)  # another open file description: flock conflicts as with another process
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        cap = ActivationCapture(h, ps, [t], "last", BATCH, DEFAULT_BATCH_TOKENS, tmp_path, set())
        cap.open()
        assert cap.persisted() == set()
        assert [cap.sink(i, cap.run(i)) for i in range(n)] == [False] * n
        cap.close(True)
    finally:
        os.close(fd)
    np.testing.assert_array_equal(cap.activations()[0], fresh)
    assert record.read_text() == before and array.exists()
