"""Auto-interpretation on planted contexts: keyword explainer end to end, quantile sampling, failures, LLM path, cache."""
from __future__ import annotations

import json
import math
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from medinterp.errors import MedinterpError
from medinterp.judges import LLMJudge
from medinterp.sae import SAEConfig, SparseAutoencoder
from medinterp.sae.autointerp import InterpConfig, LatentCodes, encode_contexts, interpret, stratified
from medinterp.sae.contexts import Contexts, capture_contexts
from medinterp.sae.interpreters import (DETECT_SYSTEM, EXPLAIN_SYSTEM, Answer, KeywordInterpreter, LLMInterpreter,
                                        make_interpreter, parse_labels, response_format)

WORDS = [" fever", " cough", " aspirin", " the", " patient", " dose", " of", " and", " rash", " pain",
         " daily", " mg", " was", " with", " heart", " lung", " blood", " test", " acute", " chronic"]
FEVER, COUGH, NOISE = 0, 1, len(WORDS)  # planted directions: two words and a noise coordinate


def planted(n_ctx: int = 400, ctx_len: int = 16, seed: int = 0):
    """Contexts of random words; x = one-hot(word) ⊕ u, u ~ U(0, 1) a coordinate independent of the words.

    SAE latents (jumprelu, threshold θ): 0 reads the ' fever' coordinate (θ = 0.5: fires exactly on ' fever');
    1 reads u (θ = 0.97: fires on 3 % of tokens at random, whatever the word); 2 never fires; 3 fires exactly on
    ' cough'."""
    rng = np.random.default_rng(seed)
    ids = rng.integers(0, len(WORDS), size=(n_ctx, ctx_len))
    x = np.zeros((n_ctx, ctx_len, len(WORDS) + 1), dtype=np.float32)
    np.put_along_axis(x, ids[..., None], 1.0, axis=2)
    x[..., NOISE] = rng.random((n_ctx, ctx_len))
    d = x.shape[2]
    W_enc = torch.zeros(d, 4)
    W_enc[FEVER, 0], W_enc[NOISE, 1], W_enc[COUGH, 3] = 1.0, 1.0, 1.0
    sae = SparseAutoencoder.from_tensors(SAEConfig(d, 4, activation="jumprelu"), "planted", W_enc=W_enc,
                                         b_enc=torch.tensor([0.0, 0.0, -1.0, 0.0]), W_dec=W_enc.T.clone(),
                                         b_dec=torch.zeros(d), threshold=torch.tensor([0.5, 0.97, 0.5, 0.5]))
    return sae, Contexts([[WORDS[i] for i in row] for row in ids], x)


def test_stratified_takes_one_context_from_each_quantile():
    order = np.arange(100)  # ranked strongest first
    picked = np.sort(stratified(order, 10, 10, np.random.default_rng(0)))
    assert np.array_equal(picked // 10, np.arange(10))
    assert len(set(stratified(order[:7], 20, 10, np.random.default_rng(0)))) == 7  # all there are, no repeats


def test_codes_are_sparse_and_equal_the_dense_encoding():
    sae, ctx = planted(n_ctx=30)
    codes = encode_contexts(sae, ctx, batch_contexts=7)
    dense = sae.encode(torch.as_tensor(ctx.activations).reshape(-1, ctx.activations.shape[2])).detach().reshape(30, 16, 4)
    ref = LatentCodes.from_dense(dense.numpy())
    for j in range(4):
        assert np.array_equal(codes.dense(j), dense[..., j].numpy()) and np.array_equal(ref.dense(j), codes.dense(j))
    fever = np.array([[t == " fever" for t in row] for row in ctx.tokens])
    assert np.array_equal(codes.dense(0) > 0, fever)


def test_keyword_pipeline_end_to_end_on_planted_latents():
    sae, ctx = planted()
    result = interpret(sae, ctx, KeywordInterpreter())
    fever, noise, dead, cough = result.latents
    assert fever.status == "ok" and fever.explanation == "fever" and fever.detection == 1.0
    assert cough.explanation == "cough" and cough.detection == 1.0 and cough.top_tokens == "cough"
    assert noise.status == "ok" and abs(noise.detection - 0.5) < 0.15  # chance: its firing ignores the words
    assert dead.status == "skipped: never active" and math.isnan(dead.detection) and dead.n_active == 0
    assert fever.n_explain == 20 and fever.n_detect_active == fever.n_detect_inactive == 20
    summary = result.summary()
    assert (summary["n_ok"], summary["n_skipped"], summary["n_failed"]) == (3, 1, 0)
    assert summary["detection"] == pytest.approx(np.mean([1.0, noise.detection, 1.0]))
    again = interpret(sae, ctx, KeywordInterpreter(), latents=[3, 0])  # per-latent seeding: same samples
    assert [r.detection for r in again.latents] == [cough.detection, fever.detection]


def test_held_out_contexts_are_disjoint_from_the_explained_ones_and_spread_over_quantiles():
    sae, ctx = planted()
    seen: dict[str, list] = {}

    class Spy(KeywordInterpreter):
        def explain(self, items):
            seen["explain"] = items
            return super().explain(items)

        def detect(self, items):
            seen["detect"] = items
            return super().detect(items)

    interpret(sae, ctx, Spy(), latents=[1])
    explained = {ex.tokens for ex in seen["explain"][0].examples}
    shown = [c for item in seen["detect"] for c in item.contexts]
    assert len(shown) == 40 and not explained & set(shown)
    maxima = sorted(max(ex.activations) for ex in seen["explain"][0].examples)
    assert maxima[0] < 0.975 and maxima[-1] > 0.995  # weak and strong activations both shown


class Failing(KeywordInterpreter):
    """Fails to explain latent 0 and loses the first detection batch of latent 3."""

    def explain(self, items):
        return [Answer(None, "HTTP 500: scripted") if it.latent == 0 else a for it, a in zip(items, super().explain(items))]

    def detect(self, items):
        out, lost = super().detect(items), False
        for i, item in enumerate(items):
            if item.latent == 3 and not lost:
                out[i], lost = Answer(None, "malformed reply"), True
        return out


def test_judge_failures_are_recorded_per_latent_and_not_averaged():
    sae, ctx = planted()
    result = interpret(sae, ctx, Failing())
    fever, noise, _, cough = result.latents
    assert fever.status == "failed: explanation: HTTP 500: scripted" and math.isnan(fever.detection)
    assert cough.status == "failed: detection: 10 of 40 labels missing (malformed reply)"
    assert cough.explanation == "cough" and math.isnan(cough.detection)
    summary = result.summary()
    assert (summary["n_ok"], summary["n_failed"]) == (1, 2) and summary["detection"] == noise.detection
    assert summary["failures"] == [f"latent 0: {fever.status}", f"latent 3: {cough.status}"]


# -- the LLM interpreter against a scripted OpenAI client -------------------------------------------------------
class ScriptedLLM:
    """Stands in for ``openai.OpenAI``: explains with ``explanation``; labels an excerpt 1 iff it contains 'fever'."""

    requests: list[dict] = []
    explanation = '{"explanation": "the word fever"}'
    fail_with: str | None = None

    def __init__(self, **kwargs):
        self.chat = SimpleNamespace(completions=SimpleNamespace(create=self.create))

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return None

    def create(self, **request):
        ScriptedLLM.requests.append(request)
        if ScriptedLLM.fail_with:
            raise ValueError(ScriptedLLM.fail_with)
        system, user = request["messages"][0]["content"], request["messages"][1]["content"]
        if system == EXPLAIN_SYSTEM:
            content = ScriptedLLM.explanation
        else:
            assert system == DETECT_SYSTEM
            excerpts = user.split("Excerpt ")[1:]
            content = json.dumps({"labels": [int("fever" in e) for e in excerpts]})
        return SimpleNamespace(choices=[SimpleNamespace(message=SimpleNamespace(content=content, refusal=None))])


@pytest.fixture
def scripted(monkeypatch):
    import openai

    ScriptedLLM.requests, ScriptedLLM.explanation, ScriptedLLM.fail_with = [], '{"explanation": "the word fever"}', None
    monkeypatch.setattr(openai, "OpenAI", ScriptedLLM)
    return ScriptedLLM


def llm(tmp_path, **kw) -> LLMInterpreter:
    return LLMInterpreter(LLMJudge(**{"model": "judge-m", "base_url": "http://127.0.0.1:9/v1", "api_key_env": None,
                                      "max_workers": 1, "cache_dir": str(tmp_path), **kw}))


def test_llm_interpreter_strict_json_scores_and_the_cache_makes_a_rerun_send_nothing(scripted, tmp_path):
    sae, ctx = planted()
    first = interpret(sae, ctx, llm(tmp_path), latents=[0])
    [row] = first.latents
    assert row.status == "ok" and row.explanation == "the word fever" and row.detection == 1.0 and not row.cached
    explain_req, *detect_reqs = scripted.requests
    assert len(detect_reqs) == 4  # 40 held-out contexts in batches of 10
    assert explain_req["response_format"]["json_schema"]["strict"] is True and explain_req["temperature"] == 0.0
    assert "<< fever>>" in explain_req["messages"][1]["content"]  # active tokens marked for the explainer
    assert "<<" not in detect_reqs[0]["messages"][1]["content"]  # but never for the scorer
    n = len(scripted.requests)
    again = interpret(sae, ctx, llm(tmp_path), latents=[0])
    assert len(scripted.requests) == n and again.latents[0].cached and again.latents[0].detection == 1.0


def test_llm_failures_are_visible_and_the_key_never_appears(scripted, tmp_path, monkeypatch):
    sae, ctx = planted()
    scripted.explanation = "I think it is about fevers."  # not JSON, twice: one re-ask, then missing
    [row] = interpret(sae, ctx, llm(tmp_path), latents=[0]).latents
    assert row.status == "failed: explanation: malformed reply (after one re-ask): not valid JSON"
    assert len(scripted.requests) == 2
    monkeypatch.setenv("SECRET_TEST_KEY", "sk-do-not-leak-123")
    scripted.fail_with = "auth failed for key sk-do-not-leak-123"
    [row] = interpret(sae, ctx, llm(tmp_path, api_key_env="SECRET_TEST_KEY"), latents=[0]).latents
    assert row.status == "failed: explanation: ValueError: auth failed for key ***"
    assert not list(tmp_path.rglob("*.json"))  # failures are never cached


def test_json_object_formats_bound_the_reply_for_a_grammar():
    from medinterp.sae.interpreters import DETECT_SCHEMA, EXPLAIN_SCHEMA

    detect = response_format("json_object", "detect", DETECT_SCHEMA, n_items=7)["schema"]["properties"]["labels"]
    assert (detect["minItems"], detect["maxItems"]) == (7, 7) and "minItems" not in DETECT_SCHEMA["properties"]["labels"]
    explain = response_format("json_object", "explain", EXPLAIN_SCHEMA, max_length=200)["schema"]
    assert explain["properties"]["explanation"]["maxLength"] == 200
    strict = response_format("json_schema", "detect", DETECT_SCHEMA, n_items=7)["json_schema"]
    assert strict["strict"] is True and strict["schema"] is DETECT_SCHEMA


def test_parse_labels_and_bad_inputs_say_what_is_wrong():
    assert parse_labels('{"labels": [1, 0, 1]}', 3) == (1, 0, 1)
    with pytest.raises(ValueError, match="2 labels for 3 excerpts"):
        parse_labels('{"labels": [1, 0]}', 3)
    with pytest.raises(ValueError, match="0 or 1"):
        parse_labels('{"labels": [1, 2, true]}', 3)
    sae, ctx = planted(n_ctx=10)
    with pytest.raises(MedinterpError, match="context 0 has 3 tokens"):
        Contexts([["a"] * 3] * 10, ctx.activations)
    with pytest.raises(MedinterpError, match=r"latent\(s\) \[4\] outside the dictionary 0..3"):
        interpret(sae, ctx, KeywordInterpreter(), latents=[4])


def test_contexts_captured_from_a_tiny_model_run_the_whole_path(cache_dir):
    from medinterp.models import ModelSpec, load_model

    handle = load_model(ModelSpec(name="tiny_llama", source="tiny", family="llama", n_layers=4), "cpu", cache_dir)
    tok = handle.tokenizer
    text = "The patient has a fever and a dry cough. Aspirin 500 mg was given twice daily for the pain. " * 6
    flat = tok(text, add_special_tokens=False)["input_ids"]
    ids = np.array([flat[i:i + 12] for i in range(0, 12 * 8, 12)])  # 8 contexts of 12 tokens
    ctx = capture_contexts(handle, ids, layer=2, batch_size=3)
    assert ctx.shape == (8, 12) and not ctx.mask[:, 0].any() and ctx.mask[:, 1:].all()
    assert "".join(ctx.tokens[0]) == tok.decode(ids[0].tolist())
    with torch.no_grad():  # transformers' hidden_states[l] is read-out l below the last layer
        ref = handle.model(input_ids=torch.as_tensor(ids[5:6]), output_hidden_states=True).hidden_states[2][0]
    assert np.allclose(ref.numpy(), ctx.activations[5], atol=1e-5)
    sae = SparseAutoencoder(SAEConfig(handle.d_model, 16, k=2, activation="topk"), seed=0)
    result = interpret(sae, ctx, make_interpreter("deterministic"), config=InterpConfig(n_explain=4, n_detect=2))
    assert {r.status.split(":")[0] for r in result.latents} <= {"ok", "skipped"}
    codes = encode_contexts(sae, ctx)
    for r in result.latents:
        assert r.n_active == int((codes.dense(r.latent).max(1) > 0).sum())  # masked first positions never count
    assert all((codes.pos > 0))


def test_make_interpreter_maps_judges_to_interpreters(tmp_path):
    assert isinstance(make_interpreter("deterministic"), KeywordInterpreter)
    interp = make_interpreter("openai", {"model": "m", "api_key_env": None}, str(tmp_path))
    assert isinstance(interp, LLMInterpreter) and interp.judge.cache_dir == str(tmp_path)
    with pytest.raises(MedinterpError, match="unknown judge 'nope'"):
        make_interpreter("nope")
