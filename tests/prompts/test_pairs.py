"""The packaged contrast pairs and the non-medical control set.

Every packaged text set has pairs that pass patching's tokenizer checks (equal token lengths, single-token answers
that differ) under SmolLM2's tokenizer (the tiny models') and Gemma 3's (the default model; ``slow``); the new
pairs of age, progression, drugs and the control keep >= 20 pairs after the gap filter on Gemma-3-270M (``slow``).
The control set is labelled like the medical sets, with templates of the same shape, and maps like them.
"""
from __future__ import annotations

import importlib.util
import json
from collections import Counter

import numpy as np
import pytest

from medinterp.methods.patching import check_pairs
from medinterp.prompts import load_prompt_set

from helpers import ROOT, run_cell_in_process

WITH_PAIRS = ("age", "symptoms", "disease", "progression", "drugs", "dosage", "control")
NEW_PAIRS = ("age", "progression", "drugs", "control")  # issue 11: >= 20 kept after the gap filter
MEDICAL = ("age", "symptoms", "disease", "progression", "drugs", "dosage")


def _check_pairs_script():
    spec = importlib.util.spec_from_file_location("check_pairs_script", ROOT / "scripts" / "check_pairs.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def smollm2_tokenizer():
    return _check_pairs_script().tokenizer_for("tiny_llama")  # SmolLM2's tokenizer, extracted once (offline)


def assert_all_pass(tokenizer, name):
    pairs = load_prompt_set(name).pairs
    kept, skipped = check_pairs(tokenizer, pairs, on_length_mismatch="skip")
    assert skipped == [] and len(kept) == len(pairs), skipped
    return kept


@pytest.mark.parametrize("name", WITH_PAIRS)
def test_pairs_are_equal_length_and_single_token_for_smollm2(smollm2_tokenizer, name):
    kept = assert_all_pass(smollm2_tokenizer, name)
    if name in NEW_PAIRS:
        assert len(kept) >= 30, len(kept)  # candidates: the gap filter drops some on every model


def test_the_check_fails_on_an_unequal_pair(smollm2_tokenizer, tmp_path):
    # the check the two tests above rely on: a longer corrupted prompt and a two-token answer are skipped
    from medinterp.prompts import ContrastPair

    pairs = [ContrastPair("long", "The drug aspirin is used to treat", "The drug acetylsalicylic acid is used to treat",
                          " pain", " fever", {}),
             ContrastPair("two_tokens", "The drug aspirin is used to treat", "The drug heparin is used to treat",
                          " pain", " thrombophlebitis", {})]
    kept, skipped = check_pairs(smollm2_tokenizer, pairs, on_length_mismatch="skip")
    assert kept == [] and [s["id"] for s in skipped] == ["long", "two_tokens"]


def test_check_pairs_script_reports_counts(capsys):
    assert _check_pairs_script().main(["control", "age", "--model", "tiny_llama"]) == 0
    out = capsys.readouterr().out
    assert "control: 42 pairs, 42 pass, 0 fail (tiny_llama)" in out and "age: 32 pairs, 32 pass, 0 fail" in out


@pytest.mark.slow
@pytest.mark.integration
@pytest.mark.parametrize("name", WITH_PAIRS)
def test_pairs_are_equal_length_and_single_token_for_gemma3(name):
    assert_all_pass(_check_pairs_script().tokenizer_for("gemma3_270m"), name)


@pytest.mark.slow  # Gemma-3-270M on one domain's pairs (about a minute each on an idle 2-core CPU)
@pytest.mark.integration
@pytest.mark.parametrize("name", NEW_PAIRS)
def test_gemma3_270m_keeps_at_least_20_pairs_after_the_gap_filter(tmp_path, name):
    out = run_cell_in_process(["model=gemma3_270m", f"domain={name}", "method=patching", "logger=none",
                               "method.sites=[resid_last]"], tmp_path)
    summary = json.loads((out / "summary.json").read_text())["method_summary"]
    assert summary["n_skipped"] == 0 and summary["n_kept"] >= 20, summary


# --------------------------------------------------------------------------- the control set


def test_control_is_labelled_like_the_medical_sets():
    ps = load_prompt_set("control")
    counts = Counter(ps.label_array("category"))
    assert set(counts) == {"object", "place", "profession"} and min(counts.values()) >= 10, counts
    assert ps.disclaimer == "" and len(ps.templates) == 4 and len(ps.pairs) >= 20
    for template in ps.templates:  # the shape of every medical template: one sentence ending on the term
        assert template.text.endswith("{" + ps.term_slot + "}.") and template.slots == (ps.term_slot,)
    for item in ps.items:
        assert item.provenance == {"system": "authored", "code": f"{item.labels['category']}:{item.id.replace('_', ' ')}"}


def test_control_prompts_are_as_long_as_the_medical_ones(smollm2_tokenizer):
    def mean_tokens(name):
        ps = load_prompt_set(name)
        return np.mean([len(smollm2_tokenizer(p.text)["input_ids"]) for t in ps.templates for p in ps.prompts(t.id)])

    def mean_pair_tokens(name):
        return np.mean([len(smollm2_tokenizer(p.clean)["input_ids"]) for p in load_prompt_set(name).pairs])

    medical = [mean_tokens(name) for name in MEDICAL]
    medical_pairs = [mean_pair_tokens(name) for name in MEDICAL]
    assert min(medical) <= mean_tokens("control") <= max(medical), (mean_tokens("control"), medical)
    assert min(medical_pairs) <= mean_pair_tokens("control") <= max(medical_pairs)


@pytest.mark.parametrize(("method", "extra"), [("patching", ["method.min_gap=0.01"]),
                                               ("umap", ["method.n_boot=20", "method.n_perm=3", "method.n_jobs=1"])])
def test_control_maps_with_patching_and_umap(tmp_path, method, extra):
    out = run_cell_in_process(["model=tiny_llama", "domain=control", f"method={method}", "logger=none", "plots=false",
                               *extra], tmp_path)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["domain"] == "control" and summary["prompt_set"]["key"].startswith("control-v1.0.0-")
    rows = (out / "per_layer.csv").read_text().splitlines()
    labelings = {line.split(",")[2] for line in rows[1:]}
    if method == "patching":
        assert labelings == {"pairs"} and summary["method_summary"]["n_pairs"] == 42
    else:
        assert "category" in labelings and summary["n_points"] == 4 * 48
