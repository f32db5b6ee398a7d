"""Explainers and detection scorers for SAE latents: the offline keyword interpreter and an LLM interpreter.

An *interpreter* does the two judge steps of auto-interpretation (:mod:`medinterp.sae.autointerp`):

- ``explain(items)``: one :class:`ExplainItem` per latent (its activating contexts, tokens and activations)
  -> one :class:`Answer` whose value is the explanation (a short string);
- ``detect(items)``: one :class:`DetectItem` per batch of held-out contexts (an explanation and unmarked
  contexts) -> one :class:`Answer` whose value is a tuple of 0/1 labels, 1 = "the latent fires in this
  context" (the detection task of Paulo et al. 2024, *Automatically Interpreting Millions of Features in
  Large Language Models*, arXiv 2410.13928, §3).

A failure is an :class:`Answer` with ``value=None`` and a one-line ``missing_reason``, never an exception.

:class:`KeywordInterpreter` (offline, deterministic, free; CI runs the whole path with it): the explanation is
the latent's top tokens (by summed activation over the shown contexts), joined by :data:`KEYWORD_SEP`; a
context is labelled activating iff one of its tokens equals a keyword (case- and space-insensitive).

:class:`LLMInterpreter`: the two prompts over an OpenAI-compatible endpoint, with the connection settings of
an ablation judge (:class:`~medinterp.judges.llm.LLMJudge` ``openai``, or
:class:`~medinterp.judges.local_server.LocalJudge` ``local``, whose server it starts and stops): temperature
0, the judge's seed, strict JSON schemas (``{"explanation": str}``, ``{"labels": [0|1, ...]}``), one re-ask on
a malformed reply, the judge's circuit breaker, answers cached on disk by request hash like the ablation
verdicts (:class:`~medinterp.judges.cache.VerdictCache`, under ``<cache_dir>/judge/``), so a rerun makes no
request. The API key is read from the environment by the judge; every reason goes through the judge's
redaction, so no secret reaches a log, a cache file or a result.
"""
from __future__ import annotations

import hashlib
import json
from collections import defaultdict
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, ClassVar, Protocol, runtime_checkable

from tqdm.auto import tqdm

from medinterp.errors import MedinterpError
from medinterp.judges.base import JudgeContext
from medinterp.judges.cache import VerdictCache
from medinterp.judges.llm import LLMJudge, _Breaker, _redact, reply_json
from medinterp.validation import is_int

PROMPT_VERSION = "medinterp-sae-interp-v1"  # part of the cache key: bump whenever a prompt below changes
KEYWORD_SEP = " | "
MARK_OPEN, MARK_CLOSE = "<<", ">>"


@dataclass(frozen=True)
class Example:
    """One context: its tokens (display strings, joined they give the text) and the latent's activation per token."""

    tokens: tuple[str, ...]
    activations: tuple[float, ...]


@dataclass(frozen=True)
class ExplainItem:
    """A latent's activating contexts (spread over activation quantiles), to be explained."""

    latent: int
    examples: tuple[Example, ...]


@dataclass(frozen=True)
class DetectItem:
    """An explanation and held-out contexts (tokens only, no activations) to label activating or not."""

    latent: int
    explanation: str
    contexts: tuple[tuple[str, ...], ...]


@dataclass(frozen=True)
class Answer:
    """An interpreter's answer: ``value`` (an explanation, or a tuple of 0/1 labels), or None and the reason."""

    value: Any
    missing_reason: str | None = None
    cached: bool = False

    @property
    def missing(self) -> bool:
        return self.value is None


@runtime_checkable
class Interpreter(Protocol):
    """Explains latents and labels held-out contexts; a context manager (a local server stays up inside it)."""

    name: str

    def explain(self, items: Sequence[ExplainItem]) -> list[Answer]: ...

    def detect(self, items: Sequence[DetectItem]) -> list[Answer]: ...

    def __enter__(self) -> Interpreter: ...

    def __exit__(self, *exc: object) -> None: ...


def normalise_token(token: str) -> str:
    """A token as a keyword: stripped of spaces (and the ``Ġ``/``▁`` word markers) and lower-cased."""
    return token.replace("\u0120", " ").replace("\u2581", " ").strip().lower()


def top_tokens(examples: Sequence[Example], n: int, min_share: float = 0.0) -> list[str]:
    """The at most ``n`` normalised tokens with the largest summed activation over ``examples``, keeping those with
    at least ``min_share`` of the total activation (the first always); empty tokens are skipped."""
    mass: dict[str, float] = defaultdict(float)
    for ex in examples:
        for token, act in zip(ex.tokens, ex.activations):
            key = normalise_token(token)
            if act > 0 and key:
                mass[key] += float(act)
    ranked = sorted(mass.items(), key=lambda kv: (-kv[1], kv[0]))  # ties by the token: deterministic
    total = sum(mass.values())
    return [tok for i, (tok, m) in enumerate(ranked[:n]) if i == 0 or m >= min_share * total]


@dataclass(frozen=True)
class KeywordInterpreter(JudgeContext):
    """Offline explainer/scorer: top tokens as the explanation, keyword matching as the classifier.

    ``n_keywords`` tokens at most, each with at least ``min_share`` of the shown activation mass (the top one
    always). A latent that fires exactly on one token gets that token and a detection score of 1; a latent whose
    activation does not depend on the tokens scores about 0.5 (tested).
    """

    n_keywords: int = 3
    min_share: float = 0.1
    name: ClassVar[str] = "keywords"

    def __post_init__(self) -> None:
        if not is_int(self.n_keywords) or self.n_keywords < 1:
            raise MedinterpError(f"KeywordInterpreter: n_keywords must be an int >= 1; got {self.n_keywords!r}")
        if not 0 <= self.min_share <= 1:
            raise MedinterpError(f"KeywordInterpreter: min_share must be in [0, 1]; got {self.min_share!r}")

    def explain(self, items: Sequence[ExplainItem]) -> list[Answer]:
        out = []
        for item in items:
            words = top_tokens(item.examples, self.n_keywords, self.min_share)
            out.append(Answer(KEYWORD_SEP.join(words)) if words else Answer(None, missing_reason="no activating token"))
        return out

    def detect(self, items: Sequence[DetectItem]) -> list[Answer]:
        out = []
        for item in items:
            keys = {normalise_token(w) for w in item.explanation.split(KEYWORD_SEP)} - {""}
            out.append(Answer(tuple(int(any(normalise_token(t) in keys for t in ctx)) for ctx in item.contexts)))
        return out


# --------------------------------------------------------------------------------------------------
# The LLM interpreter
# --------------------------------------------------------------------------------------------------
EXPLAIN_SYSTEM = """\
You explain what a single feature of a language model's internal activations responds to. You are shown text \
excerpts in which the feature is active; the tokens where it is active are marked <<like this>>, followed by \
the feature's strongest activation in that excerpt. Excerpts span weak to strong activations. Find the common \
pattern: the words, concepts or contexts that make the feature fire. Be concise and specific (at most 15 words, \
no preamble). Reply with a JSON object only: {"explanation": "<the explanation>"}."""

DETECT_SYSTEM = """\
You are given an explanation of what makes a feature of a language model fire, and numbered text excerpts. \
For each excerpt decide whether the feature is active anywhere in it, according to the explanation. Some \
excerpts are active and some are not. Reply with a JSON object only: {"labels": [...]}, one entry per excerpt \
in order, 1 = active, 0 = not active."""

REASK = "Your reply was not valid ({problem}). Reply again with the JSON object only."


def marked_text(example: Example) -> str:
    """The context's text with its active tokens wrapped in << >>."""
    return "".join(f"{MARK_OPEN}{t}{MARK_CLOSE}" if a > 0 else t for t, a in zip(example.tokens, example.activations))


def explain_messages(item: ExplainItem) -> list[dict[str, str]]:
    lines = [f"Excerpt {i + 1} (max activation {max(ex.activations):.3g}):\n{marked_text(ex)}"
             for i, ex in enumerate(item.examples)]
    return [{"role": "system", "content": EXPLAIN_SYSTEM}, {"role": "user", "content": "\n\n".join(lines)}]


def detect_messages(item: DetectItem) -> list[dict[str, str]]:
    lines = [f"Excerpt {i + 1}:\n{''.join(ctx)}" for i, ctx in enumerate(item.contexts)]
    user = f"Explanation: {item.explanation}\n\n" + "\n\n".join(lines) + \
        f"\n\nGive {len(item.contexts)} labels."
    return [{"role": "system", "content": DETECT_SYSTEM}, {"role": "user", "content": user}]


EXPLAIN_SCHEMA: dict[str, Any] = {"type": "object", "properties": {"explanation": {"type": "string"}},
                                  "required": ["explanation"], "additionalProperties": False}
DETECT_SCHEMA: dict[str, Any] = {"type": "object",
                                 "properties": {"labels": {"type": "array", "items": {"type": "integer", "enum": [0, 1]}}},
                                 "required": ["labels"], "additionalProperties": False}


def _json_object(content: str | None) -> dict[str, Any]:
    """The JSON object of a reply (:func:`~medinterp.judges.llm.reply_json`); ValueError if it is not an object."""
    data = reply_json(content)
    if not isinstance(data, dict):
        raise ValueError("not a JSON object")
    return data


def parse_explanation(content: str | None) -> str:
    """The explanation string of a reply; ValueError if missing or empty."""
    text = _json_object(content).get("explanation")
    if not isinstance(text, str) or not text.strip():
        raise ValueError("no non-empty 'explanation' string")
    return " ".join(text.split())


def parse_labels(content: str | None, n: int) -> tuple[int, ...]:
    """The ``n`` 0/1 labels of a reply; ValueError if missing, of another length or not 0/1."""
    labels = _json_object(content).get("labels")
    if not isinstance(labels, list):
        raise ValueError("no 'labels' list")
    if len(labels) != n:
        raise ValueError(f"{len(labels)} labels for {n} excerpts")
    if any(isinstance(v, bool) or v not in (0, 1) for v in labels):
        raise ValueError("labels must be 0 or 1")
    return tuple(int(v) for v in labels)


def response_format(style: str, name: str, schema: dict[str, Any], max_length: int | None = None,
                    n_items: int | None = None) -> dict[str, Any]:
    """The request's ``response_format`` in the judge's style (see :func:`medinterp.judges.llm.response_format`).

    ``json_object`` (llama-cpp-python turns the schema into a decoding grammar) also bounds the reply, so it
    always closes within ``max_tokens``: the explanation string to ``max_length`` characters, the label array to
    exactly ``n_items`` entries. Strict ``json_schema`` keeps the plain schema; the parser checks the length."""
    if style == "json_schema":
        return {"type": "json_schema", "json_schema": {"name": name, "strict": True, "schema": schema}}
    props = {key: dict(value) for key, value in schema["properties"].items()}
    for value in props.values():
        if value["type"] == "string" and max_length is not None:
            value["maxLength"] = max_length
        if value["type"] == "array" and n_items is not None:
            value.update(minItems=n_items, maxItems=n_items)
    return {"type": "json_object", "schema": {**schema, "properties": props}}


def request_key(model: str, seed: int, kind: str, messages: list[dict[str, str]]) -> str:
    """sha256 of what determines an answer: judge model, prompt version, seed, task and the messages."""
    fields = [model, PROMPT_VERSION, int(seed), kind, messages]
    return hashlib.sha256(json.dumps(fields, ensure_ascii=False).encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class LLMInterpreter:
    """The explain and detect prompts sent with the connection settings of ``judge`` (an ``openai`` or ``local``
    ablation judge: model, endpoint, key variable, timeout, retries, seed, response format, workers, cache)."""

    judge: LLMJudge
    name: ClassVar[str] = "llm"

    def __post_init__(self) -> None:
        if not isinstance(self.judge, LLMJudge):
            raise MedinterpError(f"LLMInterpreter needs an LLM judge (openai or local); got {type(self.judge).__name__}")

    def __enter__(self) -> LLMInterpreter:
        self.judge.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self.judge.__exit__(*exc)

    def explain(self, items: Sequence[ExplainItem]) -> list[Answer]:
        fmt = response_format(self.judge.response_format, "explain", EXPLAIN_SCHEMA, max_length=200)
        return self._ask("explain", [explain_messages(i) for i in items], [fmt] * len(items),
                         [parse_explanation] * len(items), self.judge.max_tokens)

    def detect(self, items: Sequence[DetectItem]) -> list[Answer]:
        style = self.judge.response_format
        formats = [response_format(style, "detect", DETECT_SCHEMA, n_items=len(i.contexts)) for i in items]
        parsers = [(lambda n: lambda content: parse_labels(content, n))(len(i.contexts)) for i in items]
        longest = max((len(i.contexts) for i in items), default=0)
        return self._ask("detect", [detect_messages(i) for i in items], formats, parsers,
                         max(self.judge.max_tokens, 4 * longest + 32))

    # -- requests --------------------------------------------------------------------------------------
    def _ask(self, kind: str, requests: list[list[dict[str, str]]], formats: list[dict[str, Any]],
             parsers: list[Callable[[str | None], Any]], max_tokens: int) -> list[Answer]:
        """One answer per request: cache hits first; the rest sent over ``judge.max_workers`` threads."""
        judge = self.judge
        cache = VerdictCache(judge.cache_dir if judge.use_cache else None)
        keys = [request_key(judge.cache_model, judge.seed, kind, messages) for messages in requests]
        out: list[Answer | None] = [None] * len(requests)
        for i, key in enumerate(keys):
            hit = cache.get(key)
            if hit is not None and hit.get("kind") == kind and "answer" in hit:
                value = hit["answer"]
                out[i] = Answer(tuple(value) if isinstance(value, list) else value, cached=True)
        todo = [i for i, answer in enumerate(out) if answer is None]
        if not todo:
            return [a for a in out if a is not None]
        secret = judge._api_key()
        try:
            with judge._endpoint() as base_url:
                from openai import OpenAI

                breaker = _Breaker(judge.max_consecutive_failures)
                with OpenAI(base_url=base_url, api_key=secret, timeout=judge.timeout,
                            max_retries=judge.max_retries) as client:
                    def work(i: int) -> Answer:
                        if breaker.open:
                            return Answer(None, f"not sent after {breaker.count} consecutive failures "
                                                f"(last: {breaker.last})")
                        answer = self._one(client, requests[i], formats[i], parsers[i], max_tokens, secret)
                        breaker.record(answer)  # an Answer has the verdict's missing/missing_reason
                        if not answer.missing:
                            value = list(answer.value) if isinstance(answer.value, tuple) else answer.value
                            cache.put(keys[i], {"model": judge.cache_model, "prompt_version": PROMPT_VERSION,
                                                "seed": judge.seed, "kind": kind, "answer": value})
                        return answer

                    with ThreadPoolExecutor(max_workers=judge.max_workers) as pool:
                        results = tqdm(pool.map(work, todo), total=len(todo), desc=f"interp {kind}", unit="request",
                                       leave=False)
                        for i, answer in zip(todo, results):
                            out[i] = answer
        except MedinterpError as err:  # the endpoint could not be opened (a local server did not start)
            for i in todo:
                out[i] = out[i] or Answer(None, _redact(str(err), secret))
        return [a if a is not None else Answer(None, "not answered") for a in out]

    def _one(self, client, messages: list[dict[str, str]], fmt: dict[str, Any], parse: Callable[[str | None], Any],
             max_tokens: int, secret: str) -> Answer:
        """One request, parsed; one re-ask on a malformed reply; any failure is a missing answer with a reason."""
        import openai

        judge = self.judge
        problem = ""
        for _ in range(2 if judge.reask else 1):
            try:
                reply = client.chat.completions.create(
                    model=judge.model, messages=messages, temperature=judge.temperature, seed=judge.seed,
                    max_tokens=max_tokens, response_format=fmt
                ).choices[0].message
            except openai.APITimeoutError:
                return Answer(None, f"timeout: no reply within {judge.timeout:g} s ({judge.max_retries} retries)")
            except openai.APIStatusError as err:
                detail = _redact(getattr(err, "message", "") or str(err), secret, 160)
                return Answer(None, f"HTTP {err.status_code} ({type(err).__name__}): {detail}")
            except (openai.OpenAIError, ValueError, KeyError, IndexError, TypeError, AttributeError) as err:
                return Answer(None, _redact(f"{type(err).__name__}: {err}", secret))
            content = getattr(reply, "content", None)
            try:
                return Answer(parse(content))
            except ValueError as err:
                problem = str(err)
                messages = [*messages, {"role": "assistant", "content": content or ""},
                            {"role": "user", "content": REASK.format(problem=problem)}]
        tries = "after one re-ask" if judge.reask else "no re-ask"
        return Answer(None, _redact(f"malformed reply ({tries}): {problem}", secret))


def make_interpreter(judge: str, settings: dict[str, Any] | None = None, cache_dir: str | None = None) -> Interpreter:
    """The interpreter for a judge of ``conf/judge/``: ``deterministic`` -> :class:`KeywordInterpreter` (its
    settings are the ablation scale's and do not apply), an LLM judge (``openai``, ``local``) ->
    :class:`LLMInterpreter` over that judge built with ``settings`` and ``cache_dir``."""
    from medinterp.judges import judge_class, make_judge

    if judge in ("deterministic", KeywordInterpreter.name):
        return KeywordInterpreter()
    if not issubclass(judge_class(judge), LLMJudge):
        raise MedinterpError(f"judge {judge!r} cannot interpret latents; valid: deterministic, keywords, or an LLM "
                             "judge (openai, local)")
    return LLMInterpreter(make_judge(judge, settings, cache_dir))  # type: ignore[arg-type]


__all__ = ["Answer", "DetectItem", "Example", "ExplainItem", "Interpreter", "KeywordInterpreter", "LLMInterpreter",
           "make_interpreter", "normalise_token", "top_tokens"]
