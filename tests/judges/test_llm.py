"""The OpenAI-client judge against a scripted local HTTP server: success, retries, re-asks, failures, cache, secrecy."""
from __future__ import annotations

import json
import logging
import math
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from medinterp.errors import MedinterpError
from medinterp.judges import RUBRIC_VERSION, JudgeItem, LLMJudge, make_judge
from medinterp.judges.cache import VerdictCache, request_key
from medinterp.judges.llm import build_messages, parse_reply, swap_order
from medinterp.run import run_method

FAKE_KEY = "sk-test-NEVER-LEAK-7f3a9c"


# -- a scripted OpenAI-compatible chat-completions server on 127.0.0.1 (stdlib only) ------------------------
# Each POST to ``/v1/chat/completions`` takes the next action from the script (the last one repeats):
#
# - ``("ok", score, rationale)``: 200 with ``{"score": score, "rationale": rationale}`` as the message;
# - ``("raw", text)``: 200 with ``text`` as the message content (malformed replies);
# - ``("status", code)``: that HTTP error with an OpenAI-style error body (429 sends ``retry-after-ms: 1``);
# - ``("echo_auth", code)``: an error whose message repeats the request's Authorization header;
# - ``("sleep", seconds)``: wait, then answer (to make the client time out).
#
# Every request is recorded (path, headers, JSON body) in ``server.requests``.


def completion(content: str, model: str = "m") -> dict[str, Any]:
    return {"id": "chatcmpl-1", "object": "chat.completion", "created": 0, "model": model,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2}}


class FakeOpenAI:
    """Start with ``with FakeOpenAI(script) as server:``; ``server.url`` is the base URL (``.../v1``)."""

    def __init__(self, script: list[tuple] | None = None) -> None:
        self.script = list(script or [("ok", 5, "fine")])
        self.requests: list[dict[str, Any]] = []
        self.lock = threading.Lock()
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:  # keep test output quiet
                pass

            def _send(self, code: int, body: dict[str, Any], headers: dict[str, str] | None = None) -> None:
                data = json.dumps(body).encode()
                try:
                    self.send_response(code)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(data)))
                    for k, v in (headers or {}).items():
                        self.send_header(k, v)
                    self.end_headers()
                    self.wfile.write(data)
                except (BrokenPipeError, ConnectionResetError):  # the client gave up (timeout test)
                    pass

            def do_GET(self) -> None:
                self._send(200, {"object": "list", "data": [{"id": "m", "object": "model"}]})

            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))) or b"{}")
                with fake.lock:
                    headers = {k.lower(): v for k, v in self.headers.items()}
                    fake.requests.append({"path": self.path, "headers": headers, "body": body})
                    action = fake.script.pop(0) if len(fake.script) > 1 else fake.script[0]
                kind = action[0]
                if kind == "ok":
                    self._send(200, completion(json.dumps({"score": action[1], "rationale": action[2]})))
                elif kind == "raw":
                    self._send(200, completion(action[1]))
                elif kind == "status":
                    headers = {"retry-after-ms": "1"} if action[1] == 429 else {}
                    self._send(action[1], {"error": {"message": f"scripted {action[1]}", "type": "test"}}, headers)
                elif kind == "echo_auth":
                    msg = f"Incorrect API key provided: {self.headers.get('Authorization')}"
                    self._send(action[1], {"error": {"message": msg, "type": "invalid_request_error"}})
                elif kind == "sleep":
                    time.sleep(action[1])
                    self._send(200, completion(json.dumps({"score": 5, "rationale": "late"})))
                else:
                    raise AssertionError(f"unknown action {action!r}")

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)

    def __enter__(self) -> FakeOpenAI:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(timeout=5)

    @property
    def chat_requests(self) -> list[dict[str, Any]]:
        return [r for r in self.requests if r["path"].endswith("/chat/completions")]


# -- tests -------------------------------------------------------------------------------------------------


@pytest.fixture(autouse=True)
def fake_key(monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", FAKE_KEY)


def items(n: int = 1) -> list[JudgeItem]:
    return [JudgeItem(f"The patient takes drug{i} 10 mg", f" once daily with food {i}", f" teenagers teenagers {i}",
                      0.5, 0.3) for i in range(n)]


def judge(server: FakeOpenAI, tmp_path, **kw) -> LLMJudge:
    settings = dict(model="judge-model", base_url=server.url, timeout=5.0, max_retries=2, max_workers=1,
                    cache_dir=str(tmp_path / "cache"), seed=3)
    return LLMJudge(**{**settings, **kw})


def test_good_answer_is_parsed_and_the_request_is_strict_deterministic_and_blind(tmp_path):
    with FakeOpenAI([("ok", 7, "lost the dose")]) as server:
        [v] = judge(server, tmp_path).score(items())
    assert (v.score, v.rationale, v.missing, v.cached) == (7.0, "lost the dose", False, False)
    [req] = server.chat_requests
    body = req["body"]
    assert body["model"] == "judge-model" and body["temperature"] == 0 and body["seed"] == 3
    fmt = body["response_format"]
    assert fmt["type"] == "json_schema" and fmt["json_schema"]["strict"] is True
    schema = fmt["json_schema"]["schema"]
    assert schema["properties"]["score"] == {"type": "integer", "minimum": 1, "maximum": 10}
    assert schema["required"] == ["rationale", "score"] and schema["additionalProperties"] is False
    text = " ".join(m["content"] for m in body["messages"])
    assert "drug0 10 mg" in text and "once daily with food 0" in text and "teenagers teenagers 0" in text
    for word in ("lesion", "ablat", "layer", "intact"):  # blind: nothing says what was done to the model
        assert word not in text.lower()
    assert req["headers"]["authorization"] == f"Bearer {FAKE_KEY}"  # the key goes only where it belongs


def test_429_is_retried_by_the_client_then_succeeds(tmp_path):
    with FakeOpenAI([("status", 429), ("ok", 4, "ok")]) as server:
        [v] = judge(server, tmp_path).score(items())
    assert v.score == 4.0 and len(server.chat_requests) == 2


def test_malformed_json_is_reasked_once_and_then_accepted(tmp_path):
    with FakeOpenAI([("raw", "I think it is a 6."), ("ok", 6, "fixed")]) as server:
        [v] = judge(server, tmp_path).score(items())
    assert v.score == 6.0
    first, second = server.chat_requests
    msgs = second["body"]["messages"]
    assert len(msgs) == len(first["body"]["messages"]) + 2
    assert msgs[-2] == {"role": "assistant", "content": "I think it is a 6."}
    assert "not valid JSON" in msgs[-1]["content"]


@pytest.mark.parametrize("reply, reason", [("nope", "not valid JSON"), ('{"score": 11, "rationale": "x"}', "outside 1..10"),
                                           ('{"score": "7", "rationale": "x"}', "not an integer")])
def test_a_reply_that_stays_malformed_is_missing_with_its_reason(tmp_path, reply, reason):
    with FakeOpenAI([("raw", reply)]) as server:
        [v] = judge(server, tmp_path).score(items())
    assert v.missing and "malformed reply (after one re-ask)" in v.missing_reason and reason in v.missing_reason
    assert len(server.chat_requests) == 2  # one request plus exactly one re-ask
    assert VerdictCache(tmp_path / "cache").folder.exists() is False  # failures are never cached


def test_a_timeout_is_missing_and_does_not_crash(tmp_path):
    with FakeOpenAI([("sleep", 1.0)]) as server:
        t0 = time.perf_counter()
        [v] = judge(server, tmp_path, timeout=0.25, max_retries=0).score(items())
        elapsed = time.perf_counter() - t0
    assert v.missing and v.missing_reason.startswith("timeout: no reply within 0.25 s")
    assert elapsed < 1.0 and len(server.chat_requests) == 1


def test_the_cache_makes_a_rerun_send_zero_requests(tmp_path):
    batch = items(3)
    with FakeOpenAI([("ok", 2, "a"), ("ok", 5, "b"), ("ok", 9, "c")]) as server:
        first = judge(server, tmp_path).score(batch)
        assert len(server.chat_requests) == 3
        again = judge(server, tmp_path).score(batch)  # a new judge object: only the disk is shared
        assert len(server.chat_requests) == 3
    assert [v.score for v in first] == [2.0, 5.0, 9.0] == [v.score for v in again]
    assert all(v.cached for v in again) and not any(v.cached for v in first)
    files = sorted((tmp_path / "cache" / "judge").rglob("*.json"))
    assert len(files) == 3
    record = json.loads(files[0].read_text())
    assert record["rubric_version"] == RUBRIC_VERSION and record["model"] == "judge-model"
    assert files[0].stem == record["key"] and len(record["key"]) == 64


def test_a_cached_verdict_whose_score_is_not_an_integer_is_asked_again(tmp_path):
    """A cache record is used only when its score is an integer (is_int): ``true`` is not the score 1."""
    with FakeOpenAI([("ok", 2, "a"), ("ok", 7, "b")]) as server:
        judge(server, tmp_path).score(items())
        [path] = (tmp_path / "cache" / "judge").rglob("*.json")
        path.write_text(json.dumps({**json.loads(path.read_text()), "score": True}))
        [again] = judge(server, tmp_path).score(items())
    assert len(server.chat_requests) == 2 and again.score == 7.0 and not again.cached


def test_identical_answers_score_one_without_a_request(tmp_path):
    same = JudgeItem("p", " same answer", " same answer ", 0.0, 0.0)
    with FakeOpenAI([("ok", 8, "x")]) as server:
        [v] = judge(server, tmp_path).score([same])
    assert v.score == 1.0 and server.chat_requests == []


def test_consecutive_failures_stop_sending_and_the_key_never_leaks(tmp_path, caplog):
    caplog.set_level(logging.DEBUG)  # the openai client logs requests at DEBUG
    with FakeOpenAI([("echo_auth", 401)]) as server:
        verdicts = judge(server, tmp_path, max_consecutive_failures=2).score(items(4))
    assert len(server.chat_requests) == 2  # 401 is not retried; then the breaker opens
    assert all(v.missing for v in verdicts)
    assert verdicts[0].missing_reason.startswith("HTTP 401 (AuthenticationError): ")
    assert "***" in verdicts[0].missing_reason  # the server echoed the key; we redacted it
    assert verdicts[3].missing_reason.startswith("not sent after 2 consecutive failures")
    leaked = [v.missing_reason for v in verdicts if FAKE_KEY in (v.missing_reason or "")]
    assert leaked == [] and FAKE_KEY not in caplog.text and FAKE_KEY not in repr(judge(server, tmp_path))


def test_order_is_randomised_by_a_seeded_coin_and_the_reference_is_named():
    keys = [request_key("m", RUBRIC_VERSION, 0, f"p{i}", "a", "b") for i in range(200)]
    coins = [swap_order(0, k) for k in keys]
    assert 70 < sum(coins) < 130  # a fair coin over 200 items
    assert coins == [swap_order(0, k) for k in keys] and coins != [swap_order(1, k) for k in keys]
    item = JudgeItem("Q?", "REFERENCE TEXT", "CANDIDATE TEXT", 0.0, 0.0)
    swapped = build_messages(item, True)[1]["content"]
    straight = build_messages(item, False)[1]["content"]
    assert swapped.index("CANDIDATE TEXT") < swapped.index("REFERENCE TEXT")
    assert "Response 2 is the reference and Response 1 is the candidate" in swapped
    assert straight.index("REFERENCE TEXT") < straight.index("CANDIDATE TEXT")
    assert "Response 1 is the reference and Response 2 is the candidate" in straight


def test_parse_reply_accepts_fenced_json_and_integral_floats_only():
    assert parse_reply('```json\n{"score": 3, "rationale": "r"}\n```') == (3, "r")
    assert parse_reply('{"score": 7.0, "rationale": "r"}') == (7, "r")
    for bad in ("", '{"rationale": "r"}', '{"score": true}', '{"score": 6.5}', '{"score": 0}', "[1]",
                '{"score": Infinity}', '{"score": NaN}'):  # Infinity was an OverflowError, not a malformed reply
        with pytest.raises(ValueError):
            parse_reply(bad)


def test_request_key_changes_with_every_field():
    base = ("m", "v1", 0, "p", "a", "b")
    key = request_key(*base)
    for i in range(len(base)):
        changed = list(base)
        changed[i] = 1 if isinstance(base[i], int) else base[i] + "x"
        assert request_key(*changed) != key


def test_settings_are_validated_and_the_key_must_be_in_the_environment(monkeypatch):
    with pytest.raises(MedinterpError, match="timeout must be > 0"):
        LLMJudge(timeout=0)
    with pytest.raises(MedinterpError, match="unknown response_format 'xml'"):
        LLMJudge(response_format="xml")
    monkeypatch.delenv("OPENAI_API_KEY")
    with pytest.raises(MedinterpError, match="set the environment variable OPENAI_API_KEY"):
        make_judge("openai", {"model": "gpt-4o"})
    assert make_judge("openai", {"api_key_env": None, "base_url": "http://127.0.0.1:9/v1"}).api_key_env is None


def test_an_ablation_run_with_the_llm_judge_writes_no_key_anywhere(tiny_handles, tmp_path, caplog):
    """End to end on a tiny model: rows, summary, item records and cache files never contain the key."""
    from medinterp.io import write_json
    from medinterp.methods.ablation import LayerAblation
    from medinterp.prompts import load_prompt_set
    from medinterp.results import RunWriter

    caplog.set_level(logging.DEBUG)
    ps = load_prompt_set("dosage")
    with FakeOpenAI([("echo_auth", 401), ("ok", 3, "similar"), ("ok", 8, "off topic")]) as server:
        method = LayerAblation(max_prompts=3, max_new_tokens=3, n_boot=10, layers=[0, 3],
                               judge=judge(server, tmp_path, skip_identical=False))
        result = run_method(method, tiny_handles["llama"], ps, ["reads"])
        n_requests = len(server.chat_requests)
    assert n_requests == 6  # 2 blocks x 3 prompts, one request each (401 is not retried)
    get = {(m.metric, m.layer): m.estimate for m in result.measurements}
    assert get[("judge_missing", 1)].value + get[("judge_missing", 4)].value == 1
    assert math.isnan(get[("judge_missing", 1)].ci_low)
    summary = result.artifacts["summary"]
    assert summary["judge_missing"] == 1 and summary["rubric_version"] == RUBRIC_VERSION
    assert "***" in next(iter(summary["judge_missing_reasons"]))
    writer = RunWriter(tmp_path / "run")
    writer.add_rows(result.rows("tiny_llama", "dosage", "ablation"))
    write_json(tmp_path / "run" / "ablation_items.json", result.artifacts["ablation_items"])
    writer.finish(result.artifacts["summary"])
    files = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert len(files) >= 5  # per_layer.csv, summary.json, items, and the cache files of the 5 answered items
    assert [p for p in files if FAKE_KEY.encode() in p.read_bytes()] == []
    assert FAKE_KEY not in caplog.text
