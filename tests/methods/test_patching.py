"""Activation patching on tiny random models: exact identities, engine agreement, pair checks, cleanup."""
from __future__ import annotations

import dataclasses
import logging

import numpy as np
import pytest
import torch

from medinterp.errors import MedinterpError
from medinterp.methods.base import method_class
from medinterp.methods.patching import ActivationPatching, check_pairs, pair_batches, patching_score, sample_pairs
from medinterp.methods.patching_engine import SITES, _logit_diff, patch_pairs, site_layers
from medinterp.models.head import answer_logits
from medinterp.prompts import ContrastPair, load_prompt_set
from medinterp.run import run_method

from helpers import TINY_FAMILIES

TINY_GAP = 0.01  # random tiny models have gaps of ~0.01-0.3 logits; real ones use min_gap = 1


@pytest.fixture(scope="module")
def dosage():
    return load_prompt_set("dosage")


def with_pairs(prompt_set, *pairs: ContrastPair):
    """The prompt set with its pairs replaced by ``pairs``."""
    return dataclasses.replace(prompt_set, pairs=tuple(pairs))


def pair(ident, clean, corrupted, clean_answer=" twice", corrupted_answer=" once"):
    return ContrastPair(ident, clean, corrupted, clean_answer, corrupted_answer, {"system": "test", "code": "x"})


@pytest.fixture
def padding(tiny_handles):
    """Restore every tiny tokenizer's padding side after the test."""
    saved = {f: h.tokenizer.padding_side for f, h in tiny_handles.items()}
    yield
    for f, side in saved.items():
        tiny_handles[f].tokenizer.padding_side = side


# ------------------------------------------------------------------------------------------- logits
@pytest.mark.parametrize("side", ["left", "right"])
@pytest.mark.parametrize("family", TINY_FAMILIES)
def test_logit_diff_equals_the_models_own_logits(tiny_handles, dosage, padding, family, side):
    h = tiny_handles[family]
    h.tokenizer.padding_side = side
    checked, _ = check_pairs(h.tokenizer, dosage.pairs)
    (_, batch), = pair_batches(h, checked[:6] + checked[-6:], batch_size=12)  # mixed lengths: real padding
    with torch.inference_mode():
        ours = _logit_diff(h, batch.clean, batch.answer_ids)
        logits = h.model(**batch.clean.model_inputs()).logits[torch.arange(12), batch.clean.last_index]
    ref = logits.gather(-1, batch.answer_ids)
    assert batch.clean.attention_mask.min() == 0  # the batch really is padded
    assert torch.allclose(ours, ref[:, 0] - ref[:, 1], atol=1e-5)


def test_answer_logits_apply_final_softcapping(tiny_handles):
    """Gemma 2 caps its logits (cap * tanh(x / cap)); our two-row head must do the same."""
    from transformers import AutoModelForCausalLM, Gemma2Config

    from medinterp.models import ModelHandle, ModelSpec, adapter_for

    tok = tiny_handles["llama"].tokenizer
    config = Gemma2Config(vocab_size=len(tok), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                          num_attention_heads=4, num_key_value_heads=2, head_dim=16, final_logit_softcapping=0.05,
                          pad_token_id=tok.pad_token_id)
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(config).eval()
    h = ModelHandle(ModelSpec(name="g2", source="tiny", family="llama"), model, tok, adapter_for(model),
                    torch.device("cpu"), "test")
    ids = torch.tensor([[11, 2000, 12]])
    with torch.inference_mode():
        hidden = h.parts.backbone(input_ids=ids).last_hidden_state[:, -1]
        ref = model(input_ids=ids).logits[:, -1, [5, 77]]
        ours = answer_logits(h, hidden, torch.tensor([[5, 77]]))
        uncapped = h.parts.lm_head(hidden)[:, [5, 77]]
    assert torch.allclose(ours, ref, atol=1e-6)
    assert (uncapped - ref).abs().max() > 1e-3  # the cap really changes these logits


# --------------------------------------------------------------------------------------- identities
@pytest.mark.parametrize("family", TINY_FAMILIES)
def test_exact_identities_and_engines_agree(tiny_handles, dosage, family):
    """P = 1 for a full patch at read-out 0 and for the last position at read-out n; fast == naive."""
    h = tiny_handles[family]
    fast, naive = (run_method(ActivationPatching(sites=SITES, engine=e, min_gap=TINY_GAP), h, dosage, [])
                   for e in ("fast", "naive"))
    p = fast.artifacts["p"]
    assert fast.artifacts["summary"]["n_kept"] >= 10
    assert np.abs(p["resid_all"][0] - 1).max() <= 1e-5  # the whole block-0 input is the clean run's
    assert np.abs(p["resid_diff"][0] - 1).max() <= 1e-5  # the other positions' embeddings are equal anyway
    assert np.abs(p["resid_last"][-1] - 1).max() <= 1e-5  # raw last-block output at the last position
    # Every dosage pair ends on the same token ("taken", "by", "in", "a"): patching its embedding is a no-op.
    assert np.abs(p["resid_last"][0]).max() <= 1e-5
    assert np.abs(p["attn"]).max() > 1e-2 and np.abs(p["mlp"]).max() > 1e-2  # the sites do something
    for site in SITES:
        assert p[site].shape == (len(site_layers(site, 4)), fast.artifacts["summary"]["n_kept"])
        assert np.abs(p[site] - naive.artifacts["p"][site]).max() <= 1e-4, site
    assert fast.artifacts["summary"]["n_block_calls"] < 0.75 * naive.artifacts["summary"]["n_block_calls"]
    assert fast.artifacts["summary"]["logit_check_abs_diff"] < 1e-4


@pytest.mark.parametrize("engine", ["fast", "naive"])
def test_pairs_below_min_gap_are_not_patched_and_the_rest_is_unchanged(tiny_handles, dosage, engine):
    h = tiny_handles["gemma3"]
    checked, _ = check_pairs(h.tokenizer, dosage.pairs)
    (_, batch), = pair_batches(h, checked, batch_size=32)
    every = patch_pairs(h, batch, ("resid_diff", "mlp"), engine)
    gap = (every.ld_clean - every.ld_corrupt).abs()
    threshold = float(gap.median())  # about half the pairs fall below it
    some = patch_pairs(h, batch, ("resid_diff", "mlp"), engine, min_gap=threshold)
    kept = gap >= threshold
    assert 0 < int(kept.sum()) < len(kept)
    torch.testing.assert_close(some.ld_clean, every.ld_clean)
    for site in ("resid_diff", "mlp"):
        assert torch.isnan(some.ld_patched[site][:, ~kept]).all()
        torch.testing.assert_close(some.ld_patched[site][:, kept], every.ld_patched[site][:, kept], rtol=1e-5, atol=1e-5)
    none = patch_pairs(h, batch, ("mlp",), engine, min_gap=1e9)  # nothing kept: no patched forwards
    assert torch.isnan(none.ld_patched["mlp"]).all()


def test_a_head_that_disagrees_with_the_model_is_flagged(tiny_handles, dosage, caplog):
    """A family that scales logits where we do not look would give wrong LDs: the run-time check warns."""
    h = tiny_handles["llama"]
    vocab = h.parts.lm_head.weight.shape[0]
    head = torch.nn.Linear(h.d_model, vocab)  # the model's weights plus a bias of 0.01 * token id
    head.weight.data = h.parts.lm_head.weight.data
    head.bias.data = 0.01 * torch.arange(vocab, dtype=torch.float32)
    wrong = dataclasses.replace(h, parts=dataclasses.replace(h.parts, lm_head=head))
    ps = with_pairs(dosage, *dosage.pairs[:3])
    with caplog.at_level(logging.WARNING, logger="medinterp.methods.patching"):
        res = run_method(ActivationPatching(sites=("resid_last",), min_gap=0.0), wrong, ps, [])
    assert res.artifacts["summary"]["logit_check_abs_diff"] > 1e-3
    assert "differs from the model's own" in caplog.text


@pytest.mark.parametrize("engine", ["fast", "naive"])
def test_patching_corrupted_into_corrupted_changes_nothing(tiny_handles, dosage, engine):
    h = tiny_handles["qwen3"]
    checked, _ = check_pairs(h.tokenizer, dosage.pairs)
    (_, batch), = pair_batches(h, checked[:8], batch_size=8)
    same = dataclasses.replace(batch, clean=batch.corrupt)
    out = patch_pairs(h, same, SITES, engine)
    for site in SITES:
        assert torch.equal(out.ld_patched[site], out.ld_corrupt.expand_as(out.ld_patched[site])), site


def test_scores_are_raw_and_unclipped():
    p = patching_score(np.array([[3.0, 0.5], [1.0, -1.0]]), ld_clean=np.array([2.0, 1.0]), ld_corrupt=np.array([1.0, 0.0]))
    assert np.allclose(p, [[2.0, 0.5], [0.0, -1.0]])


# --------------------------------------------------------------------------------- rows and filters
def test_rows_filters_and_batching(tiny_handles, dosage, padding):
    h = tiny_handles["llama"]
    results = []
    for batch_size, side in ((32, "right"), (4, "left")):  # batching and padding side must not matter
        h.tokenizer.padding_side = side
        method = ActivationPatching(sites=("resid_last", "mlp"), min_gap=0.05, n_boot=50)
        results.append(run_method(method, h, dosage, [], batch_size=batch_size))
    a, b = (r.artifacts for r in results)
    assert np.abs(a["ld_clean"] - b["ld_clean"]).max() < 1e-4
    gaps = a["ld_clean"] - a["ld_corrupt"]
    small = [pid for pid, g in zip(a["pair_ids"], gaps) if abs(g) < 0.05]
    for art in (a, b):  # filtered pairs are not patched at all
        assert np.isnan(art["ld_patched"]["mlp"][:, ~art["kept"]]).all() and np.isfinite(art["ld_patched"]["mlp"][:, art["kept"]]).all()
    assert np.abs(a["ld_patched"]["mlp"] - b["ld_patched"]["mlp"])[:, a["kept"]].max() < 1e-4
    summary = a["summary"]
    assert 0 < len(small) < 25  # the threshold really splits these pairs
    assert summary["n_filtered"] == len(small) and summary["filtered_pairs"] == small
    assert summary["n_kept"] == 25 - len(small) and summary["n_pairs"] == 25 and summary["n_skipped"] == 0
    rows = {(m.metric, m.layer): m.estimate for m in results[0].measurements}
    assert sorted(layer for metric, layer in rows if metric == "p_resid_last") == [0, 1, 2, 3, 4]
    assert sorted(layer for metric, layer in rows if metric == "p_mlp") == [1, 2, 3, 4]
    assert {layer for metric, layer in rows if metric.startswith("ld_")} == {-1}
    est = rows[("p_mlp", 2)]
    assert est.n == summary["n_kept"] and est.ci_low <= est.value <= est.ci_high
    assert est.value == pytest.approx(a["p"]["mlp"][1].mean())
    keep = np.abs(gaps) >= 0.05
    assert rows[("ld_clean", -1)].value == pytest.approx(a["ld_clean"][keep].mean())


def test_pair_fraction_draws_a_seeded_subset_and_each_seed_measures_its_own_pairs(tiny_handles, dosage):
    h = tiny_handles["llama"]
    checked, _ = check_pairs(h.tokenizer, dosage.pairs)
    assert sample_pairs(checked, 1.0, 0) == checked
    subsets = {seed: sample_pairs(checked, 0.8, seed) for seed in (0, 1, 2)}
    for seed, subset in subsets.items():
        assert len(subset) == 20 and subset == sample_pairs(checked, 0.8, seed)  # round(0.8 * 25), reproducible
        assert [checked.index(c) for c in subset] == sorted(checked.index(c) for c in subset)  # original order
    assert len({tuple(c.pair.id for c in s) for s in subsets.values()}) == 3  # three different subsets
    assert len(sample_pairs(checked[:3], 0.1, 0)) == 2  # never fewer than 2 pairs
    full = run_method(ActivationPatching(sites=("resid_last",), min_gap=0.0, n_boot=20), h, dosage, []).artifacts
    ld = dict(zip(full["pair_ids"], full["ld_patched"]["resid_last"].T))
    curves = []
    for seed in (0, 1):
        res = run_method(ActivationPatching(sites=("resid_last",), min_gap=0.0, n_boot=20, seed=seed, pair_fraction=0.8), h, dosage, [])
        art = res.artifacts
        assert art["pair_ids"] == art["summary"]["sampled_pairs"] == [c.pair.id for c in subsets[seed]]
        for pid, values in zip(art["pair_ids"], art["ld_patched"]["resid_last"].T):  # a pair's numbers do not
            np.testing.assert_allclose(values, ld[pid], rtol=1e-5, atol=1e-5)  # depend on the others in its batch
        curves.append([m.estimate.value for m in res.measurements if m.metric == "p_resid_last"])
    assert not np.allclose(curves[0], curves[1])  # different pairs, different mean curve


def test_all_pairs_filtered_gives_no_rows(tiny_handles, dosage):
    res = run_method(ActivationPatching(sites=("resid_last",), min_gap=100.0), tiny_handles["llama"], dosage, [])
    assert res.measurements == [] and res.artifacts["summary"]["n_filtered"] == 25
    assert "min_gap" in res.artifacts["summary"]["note"]


def test_domain_without_pairs_is_empty(tiny_handles):
    no_pairs = dataclasses.replace(load_prompt_set("age"), pairs=())  # every packaged text set now has pairs
    res = run_method(ActivationPatching(), tiny_handles["llama"], no_pairs, [])
    assert res.measurements == []
    assert res.artifacts["summary"] == {"n_pairs": 0, "note": "domain has no contrast pairs"}


# -------------------------------------------------------------------------------------- pair checks
def test_multi_token_and_equal_answers_are_skipped_and_listed(tiny_handles, dosage, caplog):
    h = tiny_handles["gemma3"]
    clean, corrupted = "The standard adult dose of apixaban is taken", "The standard adult dose of edoxaban is taken"
    bad_answer = pair("multi", clean, corrupted, clean_answer=" acetylsalicylic")
    same_answer = pair("same", clean, corrupted, clean_answer=" once")
    ps = with_pairs(dosage, *dosage.pairs[:4], bad_answer, same_answer)
    with caplog.at_level(logging.WARNING, logger="medinterp.methods.patching"):
        res = run_method(ActivationPatching(sites=("resid_last",), min_gap=0.0), h, ps, [])
    summary = res.artifacts["summary"]
    assert summary["n_skipped"] == 2 and [s["id"] for s in summary["skipped_pairs"]] == ["multi", "same"]
    assert "clean: answer ' acetylsalicylic' is" in summary["skipped_pairs"][0]["reason"]
    assert "both answers are token" in summary["skipped_pairs"][1]["reason"]
    assert "multi" in caplog.text and "same" in caplog.text
    assert res.artifacts["pair_ids"] == [p.id for p in dosage.pairs[:4]]
    assert res.measurements[0].estimate.n == 4


def test_length_mismatch_raises_naming_the_pair_or_is_skipped(tiny_handles, dosage):
    h = tiny_handles["llama"]
    uneven = pair("uneven_pair", "The standard adult dose of apixaban is taken", "The dose of aspirin is taken")
    ps = with_pairs(dosage, *dosage.pairs[:3], uneven)
    with pytest.raises(MedinterpError, match="pair 'uneven_pair': clean and corrupted prompts are 11 and 6 tokens long"):
        run_method(ActivationPatching(sites=("resid_last",)), h, ps, [])
    res = run_method(ActivationPatching(sites=("resid_last",), min_gap=0.0, on_length_mismatch="skip"), h, ps, [])
    assert res.artifacts["summary"]["skipped_pairs"] == [
        {"id": "uneven_pair", "reason": "clean and corrupted prompts are 11 and 6 tokens long"}]
    assert res.artifacts["summary"]["n_kept"] == 3


@pytest.mark.parametrize("kwargs, match", [
    ({"sites": ("resid", "mlp")}, "unknown patching site 'resid'"),
    ({"sites": ()}, "sites must list at least one"),
    ({"sites": ("mlp", "mlp")}, "must not repeat"),
    ({"engine": "turbo"}, "unknown patching engine 'turbo'; valid: fast, naive"),
    ({"min_gap": -1.0}, "min_gap must be a finite number >= 0"),
    ({"n_boot": 2.5}, "n_boot must be a positive int"),
    ({"on_length_mismatch": "pad"}, "unknown on_length_mismatch 'pad'; valid: error, skip"),
    ({"pair_fraction": 0.0}, r"pair_fraction must be a number in \(0, 1\]"),
    ({"pair_fraction": 1.5}, r"pair_fraction must be a number in \(0, 1\]"),
])
def test_invalid_settings_are_one_line_errors(kwargs, match):
    with pytest.raises(MedinterpError, match=match):
        ActivationPatching(**kwargs)


def test_registered_and_sites_from_a_yaml_list():
    method = method_class("patching")(sites=["resid_last"], engine="naive")
    assert isinstance(method, ActivationPatching) and method.sites == ("resid_last",) and method.name == "patching"


# ------------------------------------------------------------------------------------------ cleanup
def _hook_state(h):
    modules = [h.parts.embed, *h.parts.layers, *(h.parts.attn(b) for b in range(h.n_layers)),
               *(h.parts.mlp(b) for b in range(h.n_layers))]
    return [(id(m), sorted(m._forward_hooks), "forward" in m.__dict__) for m in modules]


def test_hooks_and_forwards_are_restored_when_a_forward_raises(tiny_handles, dosage):
    h = tiny_handles["gemma3"]
    checked, _ = check_pairs(h.tokenizer, dosage.pairs)
    (_, batch), = pair_batches(h, checked[:4], batch_size=4)
    before = _hook_state(h)
    calls = []

    def explode(_module, _inputs, _output):  # fails in the 5th forward: read-out 2, blocks 0-1 skipped
        calls.append(1)
        if len(calls) == 5:
            raise RuntimeError("boom")

    test_hook = h.parts.layers[-1].register_forward_hook(explode)
    try:
        with pytest.raises(RuntimeError, match="boom"):
            patch_pairs(h, batch, ("resid_last",), "fast")
    finally:
        test_hook.remove()
    assert _hook_state(h) == before
    assert all("forward" not in block.__dict__ for block in h.parts.layers)
    ok = patch_pairs(h, batch, ("resid_last",), "fast")  # the model still works
    assert torch.allclose(ok.ld_patched["resid_last"][-1], ok.ld_clean, atol=1e-5)


# -------------------------------------------------------------------------------------- integration
# Measured on SmolLM2-135M (fp32, CPU): gaps LD_clean − LD_corrupt of 4.44, 3.27, 1.74, −1.57 (kept at
# min_gap = 1) and −0.06, 0.05 (filtered).
SMOLLM2_PAIRS = ("unit_insulin_vs_aspirin", "route_insulin_vs_aspirin", "unit_levothyroxine_vs_sertraline",
                 "freq_dabigatran_vs_levothyroxine", "freq_apixaban_vs_edoxaban", "route_ceftriaxone_vs_clopidogrel")


@pytest.mark.integration
@pytest.mark.slow  # the real SmolLM2-135M; the tiny-model tests of the same code are fast
def test_smollm2_dosage_pairs(smollm2, dosage):
    ps = with_pairs(dosage, *(p for p in dosage.pairs if p.id in SMOLLM2_PAIRS))
    res = run_method(ActivationPatching(sites=("resid_last",), n_boot=50), smollm2, ps, [])
    summary = res.artifacts["summary"]
    assert summary["n_skipped"] == 0 and summary["n_kept"] == 4 and summary["n_negative_gap"] == 1, summary
    assert sorted(summary["filtered_pairs"]) == ["freq_apixaban_vs_edoxaban", "route_ceftriaxone_vs_clopidogrel"]
    p = res.artifacts["p"]["resid_last"]
    assert p.shape == (smollm2.n_layers + 1, 4)
    assert np.abs(p[-1] - 1).max() <= 1e-3  # the raw last-block output restores the clean answer
    assert np.abs(p[0]).max() <= 1e-3  # same last token in clean and corrupted prompts
    rows = {(m.metric, m.layer): m.estimate for m in res.measurements}
    assert rows[("p_resid_last", smollm2.n_layers)].n == 4


def test_negative_gap_and_clean_preferring_the_corrupted_answer_are_counted_apart():
    """gap < 0 (the corrupted prompt favours the clean answer more than the clean prompt) and LD_clean < 0 (the
    model prefers the corrupted answer on the clean prompt) are different pairs; finish counts each."""
    from types import SimpleNamespace

    from medinterp.methods.patching import CheckedPair, PatchingWork

    # (LD_clean, LD_corrupt): gap < 0 with LD_clean > 0; LD_clean < 0 with gap > 0; both; neither
    lds = [(1.0, 3.0), (-3.0, -5.0), (-2.0, 1.0), (4.0, 0.0)]
    pairs = [CheckedPair(pair(f"p{i}", "a b", "a c"), 1, 2, 2) for i in range(len(lds))]
    method = ActivationPatching(sites=("resid_last",), min_gap=1.0, n_boot=10)
    work = PatchingWork({"n_pairs": 4}, pairs, [], (32, None))
    ld_clean, ld_corrupt = (np.array(v) for v in zip(*lds))
    result = {"idx": [0, 1, 2, 3], "ld_clean": ld_clean, "ld_corrupt": ld_corrupt,
              "ld_patched": {"resid_last": np.zeros((2, 4))}, "n_forwards": 0, "n_block_calls": 0}
    out = method.finish(SimpleNamespace(n_layers=1), work, [result])
    summary = out.artifacts["summary"]
    assert summary["n_kept"] == 4
    assert summary["n_negative_gap"] == 2  # p0, p2
    assert summary["n_clean_prefers_corrupted"] == 2  # p1, p2
