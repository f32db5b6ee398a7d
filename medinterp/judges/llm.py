"""An LLM judge over any OpenAI-compatible chat-completions endpoint (methods.md 1.3).

The paper scored lesioned answers with GPT-4o and did not publish its prompt; ours is :data:`RUBRIC`,
versioned by :data:`RUBRIC_VERSION` (bump it whenever the text changes: the version is part of the
cache key). Design choices, each answering a reviewer's "judge bias, irreproducible" (methods.md 1.7):

- **Blind**: the judge is never told that a model was lesioned, which layer, or which model wrote what.
  It sees the text both continuations were written for, a *reference* and a *candidate*.
- **Order-randomised**: which of the two is shown first ("Response 1") is a coin flip per item, seeded
  by ``seed`` and the item's content (independent of processing order). The rubric names the reference
  by its number in a neutral sentence, so the judge knows what to rate without position telling it.
- **Deterministic request**: temperature 0, a fixed ``seed``, and a STRICT JSON-schema response format
  ``{"score": integer 1..10, "rationale": string}``.
- **Cached**: verdicts are stored on disk by request hash (:mod:`medinterp.judges.cache`); a rerun makes
  zero calls.

Failure handling: a judge failure never ends a run. Timeouts, connection errors, 408/409/429 and 5xx
are retried by the ``openai`` client itself (``max_retries``, exponential backoff, honouring
``Retry-After``). A reply that is not valid JSON, or whose score is not an integer in 1..10, is re-asked
once with a correction message. Whatever still fails is returned as a missing verdict with a one-line
reason; the caller counts them. After ``max_consecutive_failures`` failures in a row (a wrong key, a
dead server) the remaining items are marked missing without being sent. A judge that runs its own server
(:class:`~medinterp.judges.local_server.LocalJudge`) tells a server that exited from a network error: its
items say ``judge server exited (signal 11): <log tail>``, no further request is sent, and one WARNING
line says so.

The API key is read from the environment variable named by ``api_key_env`` when a request is made. It
is never stored on the judge, in config, cache files, reasons or logs: every reason is passed through
:func:`_redact` before it leaves this module.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import threading
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, ClassVar

from tqdm.auto import tqdm

from medinterp.errors import MedinterpError
from medinterp.judges.base import SCORE_MAX, SCORE_MIN, JudgeContext, JudgeItem, Verdict, register_judge
from medinterp.judges.cache import VerdictCache, request_key
from medinterp.validation import is_int, is_number

log = logging.getLogger(__name__)

RUBRIC_VERSION = "medinterp-ablation-rubric-v1"

RUBRIC = """\
You compare two continuations of the same text. One of them is the reference; rate how much the other \
one, the candidate, departs from it. Judge meaning, factual content and fluency, not style: a faithful \
paraphrase of the reference counts as no change.

Score from 1 to 10:
1 = the same content and quality as the reference (wording may differ)
2-3 = minor differences: a small factual or stylistic change, still fluent and on topic
4-6 = a clear loss: wrong or missing key facts, repetition, or partly off topic, but readable
7-9 = mostly broken: largely wrong or off topic, or barely coherent
10 = gibberish: no coherent language, or empty

Reply with a JSON object only: {"rationale": "<one short sentence>", "score": <integer 1-10>}."""

USER_TEMPLATE = """\
Text that both continuations were written for:
<<<
{prompt}
>>>

Response 1:
<<<
{first}
>>>

Response 2:
<<<
{second}
>>>

Response {reference} is the reference and Response {candidate} is the candidate. How much does the \
candidate depart from the reference?"""

REASK = ("Your reply was not a JSON object of the form {{\"rationale\": \"<string>\", \"score\": <integer 1-10>}} "
         "({problem}). Reply again with that JSON object only.")

SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {  # rationale first: structured outputs follow this order, so the judge reasons, then scores
        "rationale": {"type": "string"},
        "score": {"type": "integer", "minimum": SCORE_MIN, "maximum": SCORE_MAX},
    },
    "required": ["rationale", "score"],
    "additionalProperties": False,
}

RESPONSE_FORMATS = ("json_schema", "json_object")


def response_format(style: str) -> dict[str, Any]:
    """The ``response_format`` request field.

    ``json_schema`` is OpenAI's strict structured output (also accepted by vLLM and llama.cpp's C++
    server). ``json_object`` is the form ``{"type": "json_object", "schema": ...}`` that llama-cpp-python
    (0.3.x) turns into a decoding grammar; its grammar ignores ``minimum``/``maximum``, so the score is
    given there as ``enum: [1, ..., 10]`` (the same set of values), which the grammar does enforce, and
the rationale gets ``maxLength: 200`` so that a reply always closes within ``max_tokens`` (>= 80).
    """
    if style == "json_schema":
        return {"type": "json_schema", "json_schema": {"name": "degradation_score", "strict": True, "schema": SCHEMA}}
    props = {"rationale": {"type": "string", "maxLength": 200},  # bounded, so a reply is never cut off
             "score": {"type": "integer", "enum": list(range(SCORE_MIN, SCORE_MAX + 1))}}
    return {"type": "json_object", "schema": {**SCHEMA, "properties": props}}


def _redact(text: str, secret: str | None, limit: int = 300) -> str:
    """One line of at most ``limit`` characters, with ``secret`` replaced by ``***``."""
    if secret:
        text = text.replace(secret, "***")
    line = " ".join(str(text).split())
    return line if len(line) <= limit else line[: limit - 1] + "…"


def swap_order(seed: int, key: str) -> bool:
    """The seeded coin: True shows the candidate first (as Response 1)."""
    return hashlib.sha256(f"{seed}:{key}".encode()).digest()[0] % 2 == 1


def build_messages(item: JudgeItem, swapped: bool) -> list[dict[str, str]]:
    """The chat messages for one item: the rubric as system message, the two responses in the user turn."""
    show = {"reference": item.clean_answer.strip() or "(empty)",
            "candidate": (item.ablated_answer or "").strip() or "(empty)"}
    first, second = ("candidate", "reference") if swapped else ("reference", "candidate")
    user = USER_TEMPLATE.format(prompt=item.prompt.strip(), first=show[first], second=show[second],
                                reference=2 if swapped else 1, candidate=1 if swapped else 2)
    return [{"role": "system", "content": RUBRIC}, {"role": "user", "content": user}]


def reply_json(content: str | None) -> Any:
    """The JSON value of a reply, alone or wrapped in text/code fences (small local models add them);
    ValueError("empty reply" | "not valid JSON") otherwise."""
    if not content or not content.strip():
        raise ValueError("empty reply")
    try:
        return json.loads(content)
    except json.JSONDecodeError:
        match = re.search(r"\{.*\}", content, flags=re.DOTALL)
        try:
            data = json.loads(match.group(0)) if match else None
        except json.JSONDecodeError:
            data = None
        if data is None:
            raise ValueError("not valid JSON") from None
        return data


def parse_reply(content: str | None) -> tuple[int, str]:
    """``(score, rationale)`` from a reply; ValueError with a short reason if malformed or out of range.

    Accepts the JSON object alone or wrapped in text/code fences (small local models add them); the
    score must be an integer (``7`` or ``7.0``) in 1..10.
    """
    data = reply_json(content)
    if not isinstance(data, dict) or "score" not in data:
        raise ValueError("no 'score' field")
    score = data["score"]
    if not (is_int(score) or is_number(score) and float(score).is_integer()):  # NaN and infinities are not
        raise ValueError(f"score {score!r} is not an integer")
    if not SCORE_MIN <= int(score) <= SCORE_MAX:
        raise ValueError(f"score {int(score)} is outside {SCORE_MIN}..{SCORE_MAX}")
    return int(score), str(data.get("rationale", ""))


class _Breaker:
    """Counts consecutive failures across worker threads; open = stop sending requests."""

    def __init__(self, limit: int) -> None:
        self.limit, self.count, self.last, self.lock = limit, 0, "", threading.Lock()

    def record(self, verdict: Verdict) -> None:
        with self.lock:
            self.count = self.count + 1 if verdict.missing else 0
            self.last = verdict.missing_reason or self.last

    @property
    def open(self) -> bool:
        return self.count >= self.limit


@register_judge("openai")
@dataclass(frozen=True)
class LLMJudge(JudgeContext):
    """An LLM judge over the ``openai`` client; settings only (the key comes from the environment)."""

    model: str = "gpt-4o-2024-08-06"
    base_url: str | None = None  # None: the client's default (https://api.openai.com/v1, or $OPENAI_BASE_URL)
    api_key_env: str | None = "OPENAI_API_KEY"  # None: a placeholder key for servers that need none
    timeout: float = 60.0  # seconds per request
    max_retries: int = 3  # the client's own retries (timeouts, connection errors, 408/409/429/5xx)
    temperature: float = 0.0
    seed: int = 0  # request seed and the order coin
    max_tokens: int = 200
    response_format: str = "json_schema"  # json_schema | json_object (see response_format())
    reask: bool = True  # one correction turn when the reply is malformed
    skip_identical: bool = True  # identical answers score 1 without a request
    max_workers: int = 4  # concurrent requests
    max_consecutive_failures: int = 8  # then the remaining items are not sent
    cache_dir: str | None = None  # medinterp cache root; verdicts go to <cache_dir>/judge/
    use_cache: bool = True

    needs_text: ClassVar[bool] = True
    rubric_version: ClassVar[str] = RUBRIC_VERSION

    def __post_init__(self) -> None:
        who = f"judge {self.name!r}"
        if not self.model:
            raise MedinterpError(f"{who}: 'model' must be set")
        if self.timeout <= 0:
            raise MedinterpError(f"{who}: timeout must be > 0 seconds; got {self.timeout}")
        for field_name, low in (("max_retries", 0), ("max_tokens", 1), ("max_workers", 1), ("max_consecutive_failures", 1)):
            value = getattr(self, field_name)
            if not is_int(value) or value < low:
                raise MedinterpError(f"{who}: {field_name} must be an int >= {low}; got {value!r}")
        if self.response_format not in RESPONSE_FORMATS:
            raise MedinterpError(f"{who}: unknown response_format {self.response_format!r}; valid: "
                                 f"{', '.join(RESPONSE_FORMATS)}")
        if self.api_key_env and not os.environ.get(self.api_key_env):
            raise MedinterpError(f"{who}: set the environment variable {self.api_key_env} to your API key "
                                 "(keys are never read from config)")

    # -- identity -------------------------------------------------------------------------------------
    @property
    def cache_model(self) -> str:
        """The judge-model part of the cache key."""
        return self.model

    def _api_key(self) -> str:
        return os.environ.get(self.api_key_env, "") if self.api_key_env else "not-needed"

    # -- scoring --------------------------------------------------------------------------------------
    def score(self, items: Sequence[JudgeItem]) -> list[Verdict]:
        """Verdicts for ``items`` in order; failures are missing verdicts with a reason, never exceptions.

        Cached and identical-answer items are settled first; only if some remain is the endpoint opened
        (for the local judge: the server started), so a fully cached rerun makes no request at all.
        """
        cache = VerdictCache(self.cache_dir if self.use_cache else None)
        out, todo = self._settle(items, cache)
        gone = None
        if todo:
            try:
                with self._endpoint() as base_url:
                    self._send(items, todo, out, cache, base_url)
                    gone = self._endpoint_gone()
            except MedinterpError as err:  # the endpoint could not be opened (a local server did not start)
                for i, _ in todo:
                    out[i] = out[i] or Verdict(None, missing_reason=_redact(str(err), self._api_key()))
        return self._report(out, gone)

    @contextmanager
    def _endpoint(self) -> Iterator[str | None]:
        """The base URL to send requests to (subclasses may start a server here)."""
        yield self.base_url

    def _endpoint_gone(self, wait: float = 0.0) -> str | None:
        """Why the endpoint can no longer answer, or None. A remote endpoint is never known to be gone; a
        judge that runs its own server says ``judge server exited (signal 11): ...`` once it has died."""
        return None

    def _settle(self, items: Sequence[JudgeItem],
                cache: VerdictCache) -> tuple[list[Verdict | None], list[tuple[int, str]]]:
        """Verdicts that need no request (identical answers, cache hits), and the (index, key) of the rest."""
        out: list[Verdict | None] = [None] * len(items)
        todo: list[tuple[int, str]] = []
        for i, item in enumerate(items):
            if item.ablated_answer is None:
                raise ValueError(f"judge {self.name!r} needs the lesioned answer text (item {i})")
            if self.skip_identical and item.ablated_answer.strip() == item.clean_answer.strip():
                out[i] = Verdict(float(SCORE_MIN), "identical answers (not sent)", asked=False)
                continue
            key = request_key(self.cache_model, RUBRIC_VERSION, self.seed, item.prompt, item.clean_answer,
                              item.ablated_answer)
            hit = cache.get(key)
            if hit is not None and is_int(hit.get("score")):
                out[i] = Verdict(float(hit["score"]), str(hit.get("rationale", "")), cached=True)
            else:
                todo.append((i, key))
        return out, todo

    def _send(self, items: Sequence[JudgeItem], todo: list[tuple[int, str]], out: list[Verdict | None],
              cache: VerdictCache, base_url: str | None) -> None:
        """Judge the ``todo`` items over ``max_workers`` threads, filling ``out`` and the cache."""
        from openai import OpenAI

        secret = self._api_key()
        breaker = _Breaker(self.max_consecutive_failures)
        with OpenAI(base_url=base_url, api_key=secret, timeout=self.timeout, max_retries=self.max_retries) as client:
            def work(job: tuple[int, str]) -> Verdict:
                i, key = job
                gone = self._endpoint_gone()
                if gone:  # a dead server answers nothing: say why instead of sending
                    return Verdict(None, missing_reason=_redact(gone, secret))
                if breaker.open:
                    return Verdict(None, missing_reason=f"not sent after {breaker.count} consecutive failures "
                                                        f"(last: {breaker.last})")
                verdict = self._judge_one(client, items[i], key, secret)
                breaker.record(verdict)
                if not verdict.missing:
                    cache.put(key, {"model": self.cache_model, "rubric_version": RUBRIC_VERSION, "seed": self.seed,
                                    "score": int(verdict.value), "rationale": verdict.rationale,
                                    "candidate_first": swap_order(self.seed, key)})
                return verdict

            with ThreadPoolExecutor(max_workers=self.max_workers) as pool:
                results = tqdm(pool.map(work, todo), total=len(todo), desc=f"judge {self.name}", unit="item", leave=False)
                for (i, _), verdict in zip(todo, results):
                    out[i] = verdict

    def _report(self, out: list[Verdict | None], gone: str | None = None) -> list[Verdict]:
        """Log the missing count (with the first reason, or why the endpoint is gone) and return the verdicts."""
        n_missing = sum(v is not None and v.missing for v in out)
        if gone:  # one line: a crashed server, not a network error
            log.warning("judge %s: %s; %d of %d items missing", self.name, _redact(gone, self._api_key()),
                        n_missing, len(out))
        elif n_missing:
            first = next(v for v in out if v is not None and v.missing)
            log.warning("judge %s: %d of %d items missing (first reason: %s)", self.name, n_missing, len(out),
                        first.missing_reason)
        return [v for v in out if v is not None]

    def _request(self, client, messages: list[dict[str, str]]):
        return client.chat.completions.create(
            model=self.model, messages=messages, temperature=self.temperature, seed=self.seed,
            max_tokens=self.max_tokens, response_format=response_format(self.response_format))

    def _judge_one(self, client, item: JudgeItem, key: str, secret: str) -> Verdict:
        """One item: request, parse, re-ask once if malformed; any failure becomes a missing verdict."""
        import openai

        messages = build_messages(item, swap_order(self.seed, key))
        problem = ""
        for attempt in range(2 if self.reask else 1):
            try:
                reply = self._request(client, messages).choices[0].message
            except openai.APITimeoutError:
                return Verdict(None, missing_reason=f"timeout: no reply within {self.timeout:g} s "
                                                    f"({self.max_retries} retries)")
            except openai.APIStatusError as err:  # 4xx/5xx after the client's retries
                detail = _redact(getattr(err, "message", "") or str(err), secret, 160)
                return Verdict(None, missing_reason=f"HTTP {err.status_code} ({type(err).__name__}): {detail}")
            except openai.APIConnectionError as err:  # a dead local server, or the network
                reason = self._endpoint_gone(wait=2.0) or f"connection error: {err}"
                return Verdict(None, missing_reason=_redact(reason, secret))
            except (openai.OpenAIError, ValueError, KeyError, IndexError, TypeError, AttributeError) as err:
                return Verdict(None, missing_reason=_redact(f"{type(err).__name__}: {err}", secret))
            content = getattr(reply, "content", None)
            if getattr(reply, "refusal", None):
                return Verdict(None, missing_reason=_redact(f"refused: {reply.refusal}", secret))
            try:
                score, rationale = parse_reply(content)
                return Verdict(float(score), _redact(rationale, secret, 500))
            except ValueError as err:
                problem = str(err)
                messages = [*messages, {"role": "assistant", "content": content or ""},
                            {"role": "user", "content": REASK.format(problem=problem)}]
        tries = "after one re-ask" if self.reask else "no re-ask"
        return Verdict(None, missing_reason=_redact(f"malformed reply ({tries}): {problem}", secret))
