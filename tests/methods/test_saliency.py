"""Weight-gradient saliency: targets, exact per-prompt gradients against plain autograd, rows, settings."""
from __future__ import annotations

import dataclasses
import logging

import numpy as np
import pytest
import torch

from medinterp.errors import MedinterpError
from medinterp.methods.saliency import grads as sal
from medinterp.methods.saliency import WeightSaliency, batch_stats, grad_plan
from medinterp.methods.targets import (
    SaliencyExample,
    TargetTokens,
    encode_targets,
    saliency_examples,
    select_examples,
    target_tokens,
)
from medinterp.prompts import load_prompt_set
from medinterp.prompts.schema import Template
from medinterp.run import run_method

FAST = dict(n_boot=20, seed=0)


@pytest.fixture(scope="module")
def drugs():
    return load_prompt_set("drugs")


@pytest.fixture
def padding(request, tiny_handles):
    """Set every tiny tokenizer's padding side for one test and restore it afterwards."""
    saved = {f: h.tokenizer.padding_side for f, h in tiny_handles.items()}
    for h in tiny_handles.values():
        h.tokenizer.padding_side = request.param
    yield request.param
    for f, h in tiny_handles.items():
        h.tokenizer.padding_side = saved[f]


def mixed_examples(drugs, tokenizer, n=5):
    """Prompts of different lengths with targets of 2-5 tokens (so padding really varies)."""
    examples = saliency_examples(drugs, "started")[:2] + saliency_examples(drugs, "new_medicine")[10:10 + n - 2]
    return encode_targets(tokenizer, examples)


# ---------------------------------------------------------------------------------------------------
# The reference: one unpadded prompt, plain autograd over every parameter
# ---------------------------------------------------------------------------------------------------
def param_groups(handle):
    parts = handle.parts
    groups = {}
    for b in range(handle.n_layers):
        groups[f"attn.{b}"] = list(parts.attn(b).parameters())
        groups[f"mlp.{b}"] = list(parts.mlp(b).parameters())
    groups["embed"] = [parts.embed.weight]
    if parts.lm_head.weight is not parts.embed.weight:
        groups["unembed"] = list(parts.lm_head.parameters())
    return groups


def direct_saliency(handle, tokens: TargetTokens, reduction="abs"):
    """(loss, {group: mean |g| or mean |w·g|}) of one prompt from torch.autograd.grad on the full logits."""
    groups = param_groups(handle)
    flat = [p for ps in groups.values() for p in ps]
    ids = torch.tensor([tokens.ids])
    logp = torch.log_softmax(handle.model(input_ids=ids).logits[0].float(), -1)
    loss = -sum(logp[tokens.n_prompt + j - 1, tokens.ids[tokens.n_prompt + j]] for j in range(tokens.n_target))
    grads = iter(torch.autograd.grad(loss, flat))
    out = {}
    for name, ps in groups.items():
        total = 0.0
        for p in ps:
            g = next(grads).double()
            total += float((g if reduction == "abs" else g * p.detach().double()).abs().sum())
        out[name] = total / sum(p.numel() for p in ps)
    return loss.item(), out


def rel(a, b):
    return abs(a - b) / abs(b)


# ---------------------------------------------------------------------------------------------------
# Exactness (the key tests)
# ---------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("padding", ["left", "right"], indirect=True)
@pytest.mark.parametrize("family", ["llama", "gemma3", "qwen2"])
def test_exact_saliency_equals_per_prompt_autograd(tiny_handles, drugs, family, padding):
    handle = tiny_handles[family]  # llama: tied; gemma3: tied, scaled embedding, q/k norms; qwen2: untied, biases
    chosen = mixed_examples(drugs, handle.tokenizer)
    lengths = {len(t.ids) for _, t in chosen}
    assert len(lengths) >= 3  # padding is really exercised
    plan = grad_plan(handle.parts)
    losses, stats = batch_stats(handle, plan, [t for _, t in chosen], "abs", "exact")
    assert set(stats) == set(param_groups(handle))
    for i, (_, tokens) in enumerate(chosen):
        loss, want = direct_saliency(handle, tokens)
        assert rel(losses[i], loss) < 1e-5
        for group, value in want.items():
            assert rel(stats[group][i, 0] / plan.n_params[group], value) < 1e-5, (group, i)


def test_abs_wxg_equals_per_prompt_autograd(tiny_handles, drugs):
    handle = tiny_handles["gemma3"]
    chosen = mixed_examples(drugs, handle.tokenizer, n=3)
    plan = grad_plan(handle.parts)
    _, stats = batch_stats(handle, plan, [t for _, t in chosen], "abs_wxg", "exact")
    _, plain = batch_stats(handle, plan, [t for _, t in chosen], "abs", "exact")
    for i, (_, tokens) in enumerate(chosen):
        _, want = direct_saliency(handle, tokens, "abs_wxg")
        for group, value in want.items():
            assert rel(stats[group][i, 0] / plan.n_params[group], value) < 1e-5, (group, i)
    assert not np.allclose(stats["mlp.0"][:, 0], plain["mlp.0"][:, 0])  # the weights really enter


def test_generic_per_prompt_backward_path_gives_the_same_numbers(tiny_handles, drugs, monkeypatch, caplog):
    """Parameters with no batched path (forced here for Gemma's q/k norms) get one backward per prompt."""
    handle = tiny_handles["gemma3"]
    tokens = [t for _, t in mixed_examples(drugs, handle.tokenizer, n=3)]
    fast_plan = grad_plan(handle.parts)
    _, fast = batch_stats(handle, fast_plan, tokens)
    monkeypatch.setattr(sal, "_is_norm", lambda module: False)
    with caplog.at_level(logging.WARNING, logger="medinterp.methods.saliency"):
        loop_plan = grad_plan(handle.parts)
    assert not loop_plan.pointwise and len(loop_plan.loop) == 2 * handle.n_layers
    assert "one backward per prompt" in caplog.text
    _, slow = batch_stats(handle, loop_plan, tokens)
    for group in fast:
        np.testing.assert_allclose(slow[group][:, 0], fast[group][:, 0], rtol=1e-6)


def test_batch_approx_is_the_gradient_of_the_batch_mean_and_smaller_when_signs_cancel(tiny_handles):
    """One context, different targets: per-prompt gradients disagree in sign and cancel in the batch mean."""
    handle = tiny_handles["llama"]
    prompt = "The patient was started on"
    examples = [SaliencyExample(f"d{i}", prompt, t) for i, t in enumerate([" metoprolol", " insulin", " aspirin"])]
    tokens = [t for _, t in encode_targets(handle.tokenizer, examples)]
    plan = grad_plan(handle.parts)
    _, exact = batch_stats(handle, plan, tokens, mode="exact")
    _, approx = batch_stats(handle, plan, tokens, mode="batch_approx")
    # by definition: |∂(mean_b L_b)/∂w| from plain autograd on the unpadded prompts
    groups = param_groups(handle)
    flat = [p for ps in groups.values() for p in ps]
    mean_loss = sum(direct_loss(handle, t) for t in tokens) / len(tokens)
    grads = iter(torch.autograd.grad(mean_loss, flat))
    for group, ps in groups.items():
        want = sum(float(next(grads).double().abs().sum()) for _ in ps)
        assert rel(approx[group][0, 0], want) < 1e-5, group
        mean_exact = exact[group][:, 0].mean()
        assert approx[group][0, 0] < 0.9 * mean_exact, group  # cancellation, not rounding
    # with one prompt per batch there is nothing to cancel: the two modes agree
    _, one_exact = batch_stats(handle, plan, tokens[:1], mode="exact")
    _, one_approx = batch_stats(handle, plan, tokens[:1], mode="batch_approx")
    for group in one_exact:
        np.testing.assert_allclose(one_approx[group], one_exact[group], rtol=1e-6)


def direct_loss(handle, tokens: TargetTokens) -> torch.Tensor:
    logp = torch.log_softmax(handle.model(input_ids=torch.tensor([tokens.ids])).logits[0].float(), -1)
    return -sum(logp[tokens.n_prompt + j - 1, tokens.ids[tokens.n_prompt + j]] for j in range(tokens.n_target))


# ---------------------------------------------------------------------------------------------------
# The method: rows, state left behind
# ---------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("family", ["llama", "qwen2"])
def test_rows_cover_every_layer_and_the_model_is_left_untouched(tiny_handles, drugs, family):
    handle = tiny_handles[family]
    model = handle.model
    before = {k: v.clone() for k, v in model.state_dict().items()}
    flags = [p.requires_grad for p in model.parameters()]
    res = run_method(WeightSaliency(max_prompts=4, **FAST), handle, drugs, ["started", "med_list"], batch_size=3)
    n = handle.n_layers
    got = {(m.labeling, m.metric, m.layer): m.estimate for m in res.measurements}
    tied = family == "llama"  # the tiny Qwen2 has its own LM head
    want = {("all", metric, b) for metric in ("grad_attn", "grad_mlp", "grad_block") for b in range(1, n + 1)}
    want |= {("all", "grad_embed", 0), ("all", "loss", -1)} | (set() if tied else {("all", "grad_unembed", n + 1)})
    assert set(got) == want
    assert all(e.n == 4 and e.ci_low <= e.value <= e.ci_high and e.value > 0 for e in got.values())
    summary = res.artifacts["summary"]
    assert summary["tied_embeddings"] is tied and summary["n_prompts"] == 4
    assert len(res.artifacts["per_prompt"]["grad_block@1"]) == 4
    # grad_block is the parameter-count-weighted mean of grad_attn and grad_mlp
    per = res.artifacts["per_prompt"]
    n_a, n_m = summary["n_params"]["attn.0"], summary["n_params"]["mlp.0"]
    mixed = (np.array(per["grad_attn@1"]) * n_a + np.array(per["grad_mlp@1"]) * n_m) / (n_a + n_m)
    np.testing.assert_allclose(per["grad_block@1"], mixed, rtol=1e-12)
    # nothing left behind: same weights, same requires_grad flags, no .grad
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert [p.requires_grad for p in model.parameters()] == flags
    assert all(p.grad is None for p in model.parameters())
    assert not model.training


def test_prompt_selection_spreads_over_items_and_templates(tiny_handles, drugs):
    tok = tiny_handles["llama"].tokenizer
    templates = [t.id for t in drugs.templates]
    per_template = {t: encode_targets(tok, saliency_examples(drugs, t)) for t in templates}
    n_items = len(drugs.items)
    chosen = select_examples(per_template, 2 * len(templates), seed=0)
    item_ids = [e.item_id for e, _ in chosen]
    assert len(set(item_ids)) == len(item_ids)  # fewer prompts than items: no item twice
    counts = {t: sum(e.template_id == t for e, _ in chosen) for t in templates}
    assert set(counts.values()) == {2}  # templates in rotation
    everything = select_examples(per_template, None, seed=0)
    assert len(everything) == n_items * len(templates)
    assert len({(e.item_id, e.template_id) for e, _ in everything}) == len(everything)
    assert select_examples(per_template, 8, seed=0) == chosen[:8]  # deterministic
    assert select_examples(per_template, 8, seed=1) != chosen[:8]


# ---------------------------------------------------------------------------------------------------
# Targets
# ---------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("domain, template, item, prompt, target", [
    ("drugs", "started", "metoprolol", "The patient was started on", " metoprolol"),
    ("drugs", "new_medicine", "metoprolol", "Today's newly prescribed medicine is", " metoprolol"),
    ("age", "aged", "age_034_female", "The patient is a female aged", " 34"),  # the other slot is filled in
    ("dosage", "reads", "atorvastatin_10mg_once_daily", "The prescription reads:", " atorvastatin"),
    ("symptoms", "complaint", "racing_heartbeat", "Chief complaint at today's visit:", " a racing heartbeat"),
])
def test_the_prompt_is_the_text_before_the_term_and_the_target_the_term(domain, template, item, prompt, target):
    examples = {e.item_id: e for e in saliency_examples(load_prompt_set(domain), template)}
    assert (examples[item].prompt, examples[item].target, examples[item].template_id) == (prompt, target, template)


def test_a_template_that_starts_with_the_term_is_skipped_with_a_warning(drugs, caplog):
    first = Template.from_text("term_first", "{drug} was started today.")
    edited = dataclasses.replace(drugs, templates=drugs.templates + (first,))
    with caplog.at_level(logging.WARNING, logger="medinterp.methods.targets"):
        assert saliency_examples(edited, "term_first") == []
    assert "term_first" in caplog.text and "starts the template" in caplog.text
    assert len(saliency_examples(edited, "started")) == len(drugs.items)


def test_targets_are_tokenized_in_context(tiny_handles):
    tok = tiny_handles["llama"].tokenizer
    drug = target_tokens(tok, SaliencyExample("m", "The patient was started on", " metoprolol"))
    prompt_ids = tok("The patient was started on")["input_ids"]
    assert list(drug.ids[:drug.n_prompt]) == prompt_ids
    assert tok.convert_ids_to_tokens(list(drug.ids[drug.n_prompt:])) == ["Ġmet", "op", "rol", "ol"]
    # " 34" is a space token then one token per digit, unlike "34" tokenized alone
    age = target_tokens(tok, SaliencyExample("a", "The patient is a female aged", " 34"))
    assert tok.convert_ids_to_tokens(list(age.ids[age.n_prompt:])) == ["Ġ", "3", "4"]
    assert list(age.ids[age.n_prompt:]) != tok("34")["input_ids"]


def test_a_token_straddling_the_prompt_target_boundary_is_skipped(tiny_handles, caplog):
    tok = tiny_handles["llama"].tokenizer  # "metoprolol" is met|op|rol|ol, so "meto" + "prolol" splits "op"
    with caplog.at_level(logging.WARNING, logger="medinterp.methods.targets"):
        assert target_tokens(tok, SaliencyExample("x", "meto", "prolol")) is None
        assert encode_targets(tok, [SaliencyExample("x", "meto", "prolol")]) == []
    assert "straddles" in caplog.text


@pytest.mark.parametrize("run_tokens, own, budget", [(16384, 256, 256), (60, 256, 60), (16384, None, 16384)])
def test_batches_fit_the_smaller_of_its_own_and_the_runs_token_budget(tiny_handles, drugs, run_tokens, own, budget):
    from medinterp.cell import Cell

    method = WeightSaliency(max_prompts=24, batch_tokens=own, **FAST)
    work = method.prepare(Cell(tiny_handles["llama"], drugs, method, ("started", "med_list"), batch_size=16,
                               batch_tokens=run_tokens))
    lengths = [len(tok.ids) - 1 for _, tok in work.chosen]  # what a batch feeds: prompt + target but the last
    sizes = [(end - start) * max(lengths[start:end]) for start, end in zip(work.starts, work.ends)]
    assert work.limits[1] == budget and max(sizes) <= budget and max(e - s for s, e in zip(work.starts, work.ends)) <= 16
    assert work.starts == [0, *work.ends[:-1]] and work.ends[-1] == len(work.chosen) == 24  # contiguous, all of them
    if budget < 24 * max(lengths):  # the budget really cuts: the next prompt would not have fitted in any batch
        assert all((end - start + 1) * max(lengths[start:end + 1]) > budget or end - start == 16
                   for start, end in zip(work.starts[:-1], work.ends[:-1]))


# ---------------------------------------------------------------------------------------------------
# Settings
# ---------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("kwargs, words", [
    (dict(reduction="l2"), ["reduction", "'l2'", "abs", "abs_wxg"]),
    (dict(mode="fast"), ["mode", "'fast'", "exact", "batch_approx"]),
    (dict(batch_tokens=0), ["method.batch_tokens", "positive integer", "0"]),
    (dict(n_boot=2.5), ["n_boot", ">= 1", "2.5"]),
    (dict(max_prompts=0), ["max_prompts", ">= 1", "null"]),
])
def test_bad_settings_give_one_line_errors(kwargs, words):
    with pytest.raises(MedinterpError) as err:
        WeightSaliency(**kwargs)
    message = str(err.value)
    assert "\n" not in message and all(w in message for w in words), message


def test_no_usable_prompt_is_a_user_error(tiny_handles, drugs):
    first = Template.from_text("term_first", "{drug} was started today.")
    edited = dataclasses.replace(drugs, templates=drugs.templates + (first,))
    with pytest.raises(MedinterpError, match="no usable prompts"):
        run_method(WeightSaliency(**FAST), tiny_handles["llama"], edited, ["term_first"])


# ---------------------------------------------------------------------------------------------------
# A real model
# ---------------------------------------------------------------------------------------------------
@pytest.mark.integration
@pytest.mark.slow  # the real SmolLM2-135M (what random tiny weights cannot show)
def test_smollm2_gradients_fall_with_depth(smollm2, drugs):
    """environment.md 2.4: per-layer gradient magnitudes fall with depth in real LMs (SmolLM2 ~32 → ~1)."""
    res = run_method(WeightSaliency(max_prompts=4, **FAST), smollm2, drugs, [t.id for t in drugs.templates],
                     batch_size=4)
    block = {m.layer: m.estimate.value for m in res.measurements if m.metric == "grad_block"}
    assert sorted(block) == list(range(1, smollm2.n_layers + 1))
    assert block[1] > 2 * block[smollm2.n_layers]
    norms = res.artifacts["summary"]["grad_norm_by_block"]
    assert norms[0] > norms[-1]
    assert all(p.grad is None for p in smollm2.model.parameters())
