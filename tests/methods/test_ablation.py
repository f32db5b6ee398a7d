"""Layer ablation: the identity hook against a model with the block deleted, generation, log-probs, rows."""
from __future__ import annotations

import copy
import math
from collections import Counter

import numpy as np
import pytest
from helpers import without_block
import torch
from torch import nn

from medinterp.errors import MedinterpError
from medinterp.judges import JudgeItem, Verdict, kl_to_score
from medinterp.hooks import replace_by_identity
from medinterp.methods.ablation import (LayerAblation, LesionScorer, answer_logprobs, greedy_generate, lesion_head,
                                        lse_rows, padding_side, select_prompts, spearman, token_metrics)
from medinterp.models import ModelHandle, adapter_for
from medinterp.prompts import load_prompt_set
from medinterp.run import run_method


TEXTS = ["The patient takes metformin 500 mg", "Aspirin", "Discharge medications: lisinopril, 10 mg once daily, and"]
FAST = dict(max_prompts=4, max_new_tokens=3, n_boot=20)  # 4 prompts: one batch


def left_batch(handle, texts):
    with padding_side(handle.tokenizer, "left"):
        enc = handle.tokenizer(texts, padding=True, return_tensors="pt")
    return enc["input_ids"], enc["attention_mask"]


def logits(model, ids, mask):
    pos = (mask.cumsum(-1) - 1).clamp(min=0)
    with torch.inference_mode():
        return model(input_ids=ids, attention_mask=mask, position_ids=pos, use_cache=False).logits


def handle_of(base: ModelHandle, model) -> ModelHandle:
    return ModelHandle(spec=base.spec, model=model, tokenizer=base.tokenizer, parts=adapter_for(model),
                       device=base.device, source=base.source)


def greedy_reference(model, tokenizer, text, n_new):
    """Unbatched greedy decoding with a full forward per step (no cache): the ground truth."""
    ids = tokenizer(text, return_tensors="pt")["input_ids"]
    out = []
    with torch.inference_mode():
        for _ in range(n_new):
            nxt = int(model(input_ids=ids, use_cache=False).logits[0, -1].argmax())
            out.append(nxt)
            if nxt == tokenizer.eos_token_id:
                break
            ids = torch.cat([ids, torch.tensor([[nxt]])], dim=1)
    return out


# -- generation and teacher forcing ----------------------------------------------------------------------
@pytest.mark.parametrize("family, block", [("llama", 0), ("llama", 3), ("gemma3", 0), ("gemma3", 2),
                                           ("gpt_oss", 0), ("gpt_oss", 1)])
def test_generation_under_ablation_equals_the_no_cache_reference_of_the_cut_model(tiny_handles, family, block):
    h = tiny_handles[family]
    ids, mask = left_batch(h, TEXTS)
    cut = without_block(h.model, block)  # block 0 is the case a cache without the placeholder gets wrong
    with replace_by_identity(h.parts, block):
        with_cache = greedy_generate(h, ids, mask, 5, use_cache=True)
        without_cache = greedy_generate(h, ids, mask, 5, use_cache=False)
    for row, text in enumerate(TEXTS):
        want = greedy_reference(cut, h.tokenizer, text, 5)
        for ans, ans_mask in (with_cache, without_cache):
            assert ans[row][ans_mask[row].bool()].tolist() == want


def test_the_intact_model_generates_the_same_with_and_without_its_cache(tiny_handles):
    h = tiny_handles["llama"]
    ids, mask = left_batch(h, TEXTS)
    a1, m1 = greedy_generate(h, ids, mask, 5, use_cache=True)
    a2, m2 = greedy_generate(h, ids, mask, 5, use_cache=False)
    assert torch.equal(a1 * m1, a2 * m2) and torch.equal(m1, m2)
    for row, text in enumerate(TEXTS):
        assert a1[row][m1[row].bool()].tolist() == greedy_reference(h.model, h.tokenizer, text, 5)


@pytest.mark.parametrize("family", ["llama", "gemma3"])
def test_teacher_forced_logprobs_follow_the_greedy_answer_and_match_an_unpadded_forward(tiny_handles, family):
    h = tiny_handles[family]
    ids, mask = left_batch(h, TEXTS)
    ans, ans_mask = greedy_generate(h, ids, mask, 4)
    lp = answer_logprobs(h, ids, mask, ans, ans_mask)  # (B, A, V)
    assert lp.shape == (*ans.shape, h.parts.lm_head.weight.shape[0])
    real = ans_mask.bool()
    assert torch.equal(lp.argmax(-1)[real], ans[real])  # greedy answer = argmax at every answer step
    for row, text in enumerate(TEXTS):  # the same numbers as the model's own logits on the unpadded text
        a = ans[row][real[row]]
        full = torch.cat([h.tokenizer(text, return_tensors="pt")["input_ids"][0], a])[None, :-1]
        with torch.inference_mode():
            ref = h.model(input_ids=full, use_cache=False).logits[0, -len(a):].float().log_softmax(-1)
        assert torch.allclose(lp[row, : len(a)], ref, atol=1e-4)


def test_token_metrics_on_hand_made_distributions():
    lp_c = torch.log(torch.tensor([[[0.5, 0.5], [0.9, 0.1]]]))
    lp_a = torch.log(torch.tensor([[[0.25, 0.75], [0.9, 0.1]]]))
    ids, mask = torch.tensor([[0, 1]]), torch.tensor([[1, 1]])
    kl, dlogp = token_metrics(lp_c, lp_a, ids, mask)
    kl0 = 0.5 * math.log(0.5 / 0.25) + 0.5 * math.log(0.5 / 0.75)
    assert kl[0] == pytest.approx(kl0 / 2) and dlogp[0] == pytest.approx(math.log(0.5 / 0.25) / 2)
    kl, dlogp = token_metrics(lp_c, lp_a, ids, torch.tensor([[1, 0]]))  # masked tokens do not count
    assert kl[0] == pytest.approx(kl0) and dlogp[0] == pytest.approx(math.log(2))


# -- prompt selection and statistics -------------------------------------------------------------------
def test_select_prompts_spreads_evenly_over_items_and_is_seeded():
    ps = load_prompt_set("dosage")
    templates = [t.id for t in ps.templates]
    chosen = select_prompts(ps, templates, 60, seed=0)
    per_item = Counter(p.item_id for p in chosen)
    assert len(chosen) == 60 and set(per_item) == {i.id for i in ps.items} and set(per_item.values()) == {1, 2}
    assert chosen == select_prompts(ps, templates, 60, seed=0) != select_prompts(ps, templates, 60, seed=1)
    few = select_prompts(ps, templates, 5, seed=0)
    assert len({p.item_id for p in few}) == 5
    assert len(select_prompts(ps, templates, None, 0)) == len(ps.items) * len(templates)


def test_spearman_is_nan_when_constant_and_ignores_missing():
    assert spearman([1, 2, 3, 4], [1, 3, 2, 4])[0] == pytest.approx(0.8)
    assert math.isnan(spearman([1, 2, 3], [5, 5, 5])[0])
    rho, n = spearman([1, 2, 3, 4, 5], [1, 2, np.nan, 4, 5])
    assert (rho, n) == (pytest.approx(1.0), 4)


# -- the method ----------------------------------------------------------------------------------------
def test_run_method_gives_rows_for_every_block(tiny_handles):
    h = tiny_handles["llama"]
    side = h.tokenizer.padding_side
    ps = load_prompt_set("dosage")
    res = run_method(LayerAblation(**FAST), h, ps, ["reads", "takes"])
    get = {(m.metric, m.layer): m.estimate for m in res.measurements}
    assert {m.labeling for m in res.measurements} == {"all"}
    assert sorted(get) == sorted((metric, layer) for metric in ("kl", "dlogp", "judge_score") for layer in (1, 2, 3, 4))
    for (metric, layer), est in get.items():
        assert est.n == 4 and np.isfinite([est.value, est.ci_low, est.ci_high]).all()
        assert est.ci_low <= est.value <= est.ci_high
    assert all(get[("kl", layer)].value > 0 for layer in (1, 2, 3, 4))
    for layer in (1, 2, 3, 4):  # the deterministic judge's score is the calibrated KL of each prompt
        assert 1 < get[("judge_score", layer)].value < 10
    items = res.artifacts["ablation_items"]
    assert len(items) == 16 and all(r["kl"] >= 0 and r["score"] == pytest.approx(kl_to_score(r["kl"])) for r in items)
    summary = res.artifacts["summary"]
    assert summary["n_prompts"] == 4 and summary["blocks"] == [0, 1, 2, 3] and summary["judge"] == "deterministic"
    assert summary["judge_missing"] == 0 and 1 <= summary["mean_answer_tokens"] <= 3
    assert h.tokenizer.padding_side == side


@pytest.mark.parametrize("family", ["llama", "gemma3", "qwen2"])
def test_the_fast_scorer_equals_the_plain_computation_for_every_block(tiny_handles, family):
    """Prefix reuse + the Δh formulas give the KL/Δlog p of a full lesioned forward (token_metrics)."""
    h = tiny_handles[family]
    ids, mask = left_batch(h, TEXTS)
    ans, ans_mask = greedy_generate(h, ids, mask, 5)
    fast = LesionScorer(h, ids, mask, ans, ans_mask, lesion_head(h))
    assert fast.head is not None and fast.logp_clean is None  # the tiny models have plain linear heads
    logp_clean = answer_logprobs(h, ids, mask, ans, ans_mask)
    for block in range(h.n_layers):
        with replace_by_identity(h.parts, block):
            got = fast.score(block)
            want = token_metrics(logp_clean, answer_logprobs(h, ids, mask, ans, ans_mask), ans, ans_mask)
        assert want[0].min() > 1e-4  # every block matters in a random model: the comparison is not 0 == 0
        np.testing.assert_allclose(got[0], want[0], rtol=1e-4, atol=1e-6)
        np.testing.assert_allclose(got[1], want[1], rtol=1e-4, atol=1e-5)
    # the replayed blocks were restored: the intact model still gives its own log-probs
    torch.testing.assert_close(answer_logprobs(h, ids, mask, ans, ans_mask), logp_clean)


def test_one_vocabulary_pass_for_several_lesions_equals_one_pass_per_lesion(tiny_handles):
    """results() after several lesion() calls gives, row by row, what score() gives block by block."""
    h = tiny_handles["gemma3"]
    ids, mask = left_batch(h, TEXTS)
    ans, ans_mask = greedy_generate(h, ids, mask, 4)
    scorer = LesionScorer(h, ids, mask, ans, ans_mask, lesion_head(h))
    single = []
    for block in range(h.n_layers):
        with replace_by_identity(h.parts, block):
            single.append(scorer.score(block))
    for block in reversed(range(h.n_layers)):  # any order: rows come back in call order
        with replace_by_identity(h.parts, block):
            scorer.lesion(block)
    kl, dlogp = scorer.results()
    assert kl.shape == dlogp.shape == (h.n_layers, len(TEXTS))
    for row, block in enumerate(reversed(range(h.n_layers))):
        np.testing.assert_allclose(kl[row], single[block][0], rtol=1e-9, atol=1e-12)
        np.testing.assert_allclose(dlogp[row], single[block][1], rtol=1e-9, atol=1e-12)
    assert scorer.pending == []


def test_lse_rows_equals_a_float64_logsumexp_across_vocabulary_slices(monkeypatch):
    import medinterp.methods.ablation.lesion as lesion

    gen = torch.Generator().manual_seed(0)
    weight, bias = torch.randn(1000, 16, generator=gen), torch.randn(1000, generator=gen)
    hidden = torch.randn(7, 16, generator=gen) * 3
    want = torch.logsumexp(hidden.double() @ weight.double().T + bias.double(), -1)
    monkeypatch.setattr(lesion, "VOCAB_SLICE", 96)  # 11 slices, the last one short
    monkeypatch.setattr(lesion, "MAX_ROWS", 3)      # 3 row blocks, the last one short
    got = lse_rows(hidden, weight, bias)
    assert got.dtype == torch.float64 and got.shape == (7,)
    torch.testing.assert_close(got, want, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(lse_rows(hidden, weight, None), torch.logsumexp(hidden.double() @ weight.double().T, -1),
                               rtol=1e-6, atol=1e-6)


def test_soft_capped_or_non_linear_heads_take_the_plain_path(tiny_handles):
    h = tiny_handles["llama"]
    assert lesion_head(h) is not None
    model = copy.deepcopy(h.model)
    model.config.final_logit_softcapping = 30.0
    assert lesion_head(handle_of(h, model)) is None
    model = copy.deepcopy(h.model)
    model.lm_head = nn.Sequential(model.lm_head)
    assert lesion_head(handle_of(h, model)) is None


def test_fast_and_plain_runs_give_the_same_rows(tiny_handles):
    h = tiny_handles["qwen2"]
    ps = load_prompt_set("dosage")
    rows = [{(m.metric, m.layer): m.estimate for m in run_method(LayerAblation(**FAST, fast=fast), h, ps, ["reads"]).measurements}
            for fast in (True, False)]
    assert rows[0].keys() == rows[1].keys()
    for key, est in rows[0].items():
        assert est.value == pytest.approx(rows[1][key].value, rel=1e-4, abs=1e-6), key
        assert est.n == rows[1][key].n


def test_a_block_that_is_already_the_identity_gives_zero_kl(tiny_handles):
    base = tiny_handles["llama"]
    model = copy.deepcopy(base.model)
    with torch.no_grad():  # zero what block 1 writes into the residual stream: its output equals its input
        model.model.layers[1].self_attn.o_proj.weight.zero_()
        model.model.layers[1].mlp.down_proj.weight.zero_()
    h = handle_of(base, model)
    res = run_method(LayerAblation(**FAST, layers=[1, 2]), h, load_prompt_set("dosage"), ["reads"])
    get = {(m.metric, m.layer): m.estimate.value for m in res.measurements}
    assert get[("kl", 2)] == pytest.approx(0.0, abs=1e-7) and get[("dlogp", 2)] == pytest.approx(0.0, abs=1e-5)
    assert get[("judge_score", 2)] == pytest.approx(1.0, abs=1e-5)
    assert get[("kl", 3)] > 1e-4  # block 2 is intact and does matter
    assert ("kl", 1) not in get and ("kl", 4) not in get


class FakeTextJudge:
    """A text judge: 1 if the lesioned answer equals the intact one, else 2 + its length; one item fails."""

    name = "fake"
    needs_text = True
    rubric_version = "test-v0"

    def __init__(self):
        self.items: list[JudgeItem] = []

    def score(self, items):
        self.items = list(items)
        out = [Verdict(1.0 if it.ablated_answer == it.clean_answer else 2.0 + len(it.ablated_answer or "") % 8)
               for it in items]
        out[0] = Verdict(None, missing_reason="scripted failure")
        return out


def test_a_text_judge_gets_lesioned_answers_and_adds_missing_and_agreement_rows(tiny_handles):
    h = tiny_handles["qwen2"]
    judge = FakeTextJudge()
    ps = load_prompt_set("symptoms")
    res = run_method(LayerAblation(**FAST, layers=[0, -1], judge=judge), h, ps, [ps.templates[0].id])
    assert len(judge.items) == 8 and all(isinstance(it.ablated_answer, str) for it in judge.items)
    # block-major: the same 4 prompts and intact answers for block 0 and for the last block
    pairs = [(it.prompt, it.clean_answer) for it in judge.items]
    assert pairs[:4] == pairs[4:]
    get = {(m.metric, m.layer): m.estimate for m in res.measurements}
    assert sorted({metric for metric, _ in get}) == ["dlogp", "judge_agreement", "judge_coverage", "judge_missing",
                                                     "judge_score", "kl"]
    assert {layer for _, layer in get} == {1, 4}
    assert get[("judge_missing", 1)].value == 1 and get[("judge_missing", 4)].value == 0
    assert get[("judge_coverage", 1)].value == 0.75 and get[("judge_coverage", 4)].value == 1.0
    assert get[("judge_score", 1)].n == 3 and get[("judge_score", 4)].n == 4
    # 3 of 4 answered is below the default 0.8: no judge_score for that layer, and the row says why
    assert math.isnan(get[("judge_score", 1)].value) and not math.isnan(get[("judge_score", 4)].value)
    notes = {(m.metric, m.layer): m.note for m in res.measurements}
    assert notes[("judge_score", 1)].startswith("judge coverage 0.75 < 0.80") and notes[("judge_score", 4)] == ""
    agree = get[("judge_agreement", 1)]
    assert math.isnan(agree.ci_low) and agree.n == 3
    summary = res.artifacts["summary"]
    assert summary["judge_missing"] == 1 and summary["judge_missing_reasons"] == {"scripted failure": 1}
    assert summary["rubric_version"] == "test-v0" and summary["judge_agreement_pairs"] == 7
    assert summary["judge_coverage"] == {"1": 0.75, "4": 1.0} and summary["judge_withheld_layers"] == [1]
    assert summary["degraded"] is True and summary["warnings"] == [
        "judge answered 7/8 items (coverage 0.88); judge_score is NaN for 1 of 2 layers"]


def test_settings_are_validated():
    with pytest.raises(MedinterpError, match="max_prompts must be an int >= 1 or null"):
        LayerAblation(max_prompts=0)
    with pytest.raises(MedinterpError, match="judge must be a judge object"):
        LayerAblation(judge="openai")
    with pytest.raises(MedinterpError, match="layers must be null or a non-empty list"):
        LayerAblation(layers=[])
    with pytest.raises(MedinterpError, match=r"layers \[7\] out of range .* valid: 0\.\.3"):
        LayerAblation(layers=[7]).blocks(4)
    assert LayerAblation(layers=[3, -1, 0]).blocks(4) == [0, 3]
    with pytest.raises(MedinterpError, match=r"min_judge_coverage must be a number in \[0, 1\]; got 1.5"):
        LayerAblation(min_judge_coverage=1.5)
    # numpy integers are block indices (is_int); the hand-written check made np.int64(3) a traceback (list() of
    # an int) and refused [np.int64(1)]; a bool is never a block index
    assert LayerAblation(layers=np.int64(3)).layers == (3,) and LayerAblation(layers=[np.int64(1), 2]).blocks(4) == [1, 2]
    with pytest.raises(MedinterpError, match="layers must be null or a non-empty list"):
        LayerAblation(layers=[True])


@pytest.mark.integration
@pytest.mark.slow  # the real SmolLM2-135M; on tiny models: test_generation_under_ablation_equals_...
def test_on_smollm2_the_placeholder_keys_are_what_makes_cached_generation_right(smollm2, monkeypatch):
    """Skip block 0 with a KV cache: with placeholder keys/values the tokens equal the no-cache ones; without, not."""
    import medinterp.hooks as hooks

    ids, mask = left_batch(smollm2, TEXTS[:2])
    with replace_by_identity(smollm2.parts, 0):
        reference = greedy_generate(smollm2, ids, mask, 4, use_cache=False)
        cached = greedy_generate(smollm2, ids, mask, 4, use_cache=True)
        monkeypatch.setattr(hooks, "_append_placeholder_kv", lambda *args: None)
        broken = greedy_generate(smollm2, ids, mask, 4, use_cache=True)
    assert torch.equal(cached[0] * cached[1], reference[0] * reference[1])
    assert broken[0].shape != reference[0].shape or not torch.equal(broken[0] * broken[1], reference[0] * reference[1])
