"""conf/judge/*.yaml and conf/method/ablation.yaml build valid objects (as the runner will build them)."""
from __future__ import annotations

import importlib.util

import pytest
from helpers import ROOT
from omegaconf import OmegaConf

from medinterp.judges import DeterministicJudge, LLMJudge, make_judge
from medinterp.methods.ablation import LayerAblation


def settings(group: str, name: str) -> dict:
    cfg = OmegaConf.create({"seed": 7, "x": OmegaConf.load(ROOT / "conf" / group / f"{name}.yaml")})
    return OmegaConf.to_container(cfg, resolve=True)["x"]


def test_every_judge_file_builds_its_judge(monkeypatch, tmp_path):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    assert make_judge("deterministic", settings("judge", "deterministic")) == DeterministicJudge()
    judge = make_judge("openai", settings("judge", "openai"), cache_dir=tmp_path)
    assert isinstance(judge, LLMJudge) and judge.seed == 7 and judge.cache_dir == str(tmp_path)
    assert judge.temperature == 0 and judge.response_format == "json_schema"
    text = " ".join((ROOT / "conf" / "judge" / f).read_text() for f in ("openai.yaml", "local.yaml"))
    assert "sk-" not in text and "api_key:" not in text  # no secrets in config
    if importlib.util.find_spec("llama_cpp") is not None:
        local = make_judge("local", settings("judge", "local"), cache_dir=tmp_path)
        assert local.cache_model.startswith("local:smollm2:SmolLM2-135M-Instruct")


def test_the_method_file_builds_the_method_with_the_default_judge():
    method = LayerAblation(**settings("method", "ablation"))
    assert (method.max_prompts, method.max_new_tokens, method.seed, method.layers, method.fast) == (32, 8, 7, None, True)
    assert isinstance(method.judge, DeterministicJudge)
    with pytest.raises(TypeError):
        LayerAblation(**settings("method", "ablation"), judge_name="x")
