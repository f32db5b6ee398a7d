"""The local judge: llama-cpp-python's server started and stopped by us, with the packaged SmolLM2."""
from __future__ import annotations

import importlib.util
import logging
import os
import sys
from pathlib import Path

import pytest

from medinterp.errors import MedinterpError
from medinterp.judges import JudgeItem, LocalJudge, llama_server, make_judge
from medinterp.judges import local_server

HAVE_LLAMA = importlib.util.find_spec("llama_cpp") is not None
needs_llama = pytest.mark.skipif(not HAVE_LLAMA, reason='llama_cpp is not importable: pip install "medinterp[judge-local]"')


def gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


def children() -> set[int]:
    """Process ids of this process's children (Linux /proc)."""
    out: set[int] = set()
    for path in Path("/proc/self/task").glob("*/children"):
        out |= {int(p) for p in path.read_text().split()}
    return out


def test_without_llama_cpp_the_error_names_the_extra(monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(local_server.importlib.util, "find_spec",
                        lambda name, *a: None if name == "llama_cpp" else real(name, *a))
    hint = r'^the local judge needs llama-cpp-python .*pip install "medinterp\[judge-local\]"$'
    with pytest.raises(MedinterpError, match=hint):
        make_judge("local")


@pytest.mark.slow  # starts llama_cpp.server
@needs_llama
def test_a_server_that_cannot_start_is_a_clear_error_and_leaves_no_process(tmp_path):
    before = children()
    with pytest.raises(MedinterpError, match="GGUF file not found"):
        with llama_server(tmp_path / "missing.gguf"):
            pass
    bad = tmp_path / "bad.gguf"
    bad.write_bytes(b"not a gguf file")
    with pytest.raises(MedinterpError, match=r"llama_cpp.server exited with status \d+ before answering"):
        with llama_server(bad, startup_timeout=60):
            pass
    assert children() <= before
    with pytest.raises(MedinterpError, match="base_url is chosen by the judge"):
        LocalJudge(base_url="http://127.0.0.1:1/v1")


@pytest.mark.slow  # starts llama_cpp.server
@needs_llama
def test_a_judge_whose_server_fails_marks_items_missing_instead_of_crashing(tmp_path):
    bad = tmp_path / "bad.gguf"
    bad.write_bytes(b"not a gguf file")
    judge = LocalJudge(model_path=str(bad), cache_dir=str(tmp_path), startup_timeout=60)
    [v] = judge.score([JudgeItem("p", "a", "b", 0.1, 0.1)])
    assert v.missing and "exited with status" in v.missing_reason


ITEMS = [
    JudgeItem("The patient takes metformin 500 mg twice daily.", " It is used to treat type 2 diabetes.",
              " the the the of of of ,,,, the", 6.0, 6.0),
    JudgeItem("Early signs of Parkinson's disease are", " a resting tremor and slow movement.",
              " a resting tremor and slow movement.", 0.0, 0.0),  # identical: scored 1 without a request
]


@pytest.mark.integration
@pytest.mark.slow  # llama.cpp serving the real SmolLM2
@needs_llama
def test_local_judge_end_to_end_with_smollm2(tmp_path):
    judge = LocalJudge(cache_dir=str(tmp_path), max_tokens=100, n_threads=1)
    before = children()
    with judge:
        server = judge.server
        assert server is not None and server.base_url.startswith("http://127.0.0.1:")
        verdicts = judge.score(ITEMS)
    assert judge.server is None and gone(server.pid) and children() <= before  # stopped and reaped
    print("local judge verdicts:", verdicts)
    assert len(verdicts) == 2 and verdicts[1].score == 1.0
    for v in verdicts[:1]:  # the server answered each request: a score, or a reason that is not a connection error
        assert (v.score is not None and 1 <= v.score <= 10) or (v.missing_reason and "connection" not in v.missing_reason)
    answered = [v for v in verdicts[:1] if not v.missing]
    assert len(list((tmp_path / "judge").rglob("*.json"))) == len(answered)
    # a rerun is served from the cache without starting a server: a broken file of the same name (same cache
    # key) would make every request fail if a server were started for them
    broken = tmp_path / judge.gguf.name
    broken.write_bytes(b"not a gguf file")
    again = LocalJudge(cache_dir=str(tmp_path), max_tokens=100, model_path=str(broken), startup_timeout=60).score(ITEMS)
    kept = [v.score for v, first in zip(again, verdicts) if not first.missing]
    assert kept == [v.score for v in verdicts if not v.missing]
    assert all(v.cached for v, first in zip(again[:1], verdicts) if not first.missing)


# -- a server that crashes while in use (issue 16: a native build for another CPU dies with SIGSEGV) ----------
STAND_IN = Path(__file__).with_name("crashing_server.py")


@pytest.mark.parametrize("extra, status", [([], "signal 11"), (["--exit-code", "3"], "exit code 3")])
def test_a_server_that_dies_on_its_first_request_is_named_in_every_verdict_and_one_warning(tmp_path, caplog, extra,
                                                                                           status):
    gguf = tmp_path / "stand-in.gguf"
    gguf.write_bytes(b"unused by the stand-in")
    judge = LocalJudge(model_path=str(gguf), cache_dir=str(tmp_path), startup_timeout=30, timeout=10, max_retries=1,
                       server_command=[sys.executable, str(STAND_IN), *extra])
    items = [JudgeItem(f"prompt {i}", "an answer", f"another answer {i}", 0.1, 0.1) for i in range(5)]
    items.append(JudgeItem("same", "identical", "identical", 0.0, 0.0))  # never sent: scored 1
    before = children()
    with caplog.at_level(logging.WARNING):
        verdicts = judge.score(items)
    assert children() <= before  # the dead server was reaped
    assert verdicts[-1].score == 1.0
    expected = f"judge server exited ({status}): "
    for v in verdicts[:-1]:
        assert v.missing and v.missing_reason.startswith(expected), v.missing_reason
        assert "crashing now" in v.missing_reason  # the tail of the server's log
        assert "connection error" not in v.missing_reason
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and expected in warnings[0] and "5 of 6 items missing" in warnings[0], warnings
    assert not list(tmp_path.glob("judge/**/*.json"))  # nothing cached


def test_a_live_server_is_not_reported_gone(tmp_path):
    gguf = tmp_path / "stand-in.gguf"
    gguf.write_bytes(b"unused")
    with llama_server(gguf, program=[sys.executable, str(STAND_IN)], startup_timeout=30) as server:
        assert server.exited() is None and server.exited(wait=0.2) is None
        os.kill(server.pid, 9)
        assert server.exited(wait=5).startswith("judge server exited (signal 9): stand-in server: listening on")
