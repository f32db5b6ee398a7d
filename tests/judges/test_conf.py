"""conf/judge/*.yaml and conf/method/ablation.yaml build valid objects (as the runner builds them: registry.build)."""
from __future__ import annotations

import importlib.util

import pytest
from helpers import ROOT
from omegaconf import OmegaConf

from medinterp.errors import MedinterpError
from medinterp.judges import DeterministicJudge, LLMJudge
from medinterp.methods.ablation import LayerAblation
from medinterp.registry import build


def conf(group: str, name: str, judge: str = "deterministic", cache_dir: str = "unused-cache") -> dict:
    """``conf/<group>/<name>.yaml`` resolved as in a run with seed 7 and judge=<judge>."""
    cfg = OmegaConf.create({"seed": 7, "cache_dir": cache_dir, "judge": OmegaConf.load(ROOT / "conf" / "judge" / f"{judge}.yaml"),
                            "x": OmegaConf.load(ROOT / "conf" / group / f"{name}.yaml")})
    return OmegaConf.to_container(cfg, resolve=True)["x"]


def test_every_judge_file_builds_its_judge(monkeypatch, tmp_path):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    assert build(conf("judge", "deterministic")) == DeterministicJudge()
    judge = build(conf("judge", "openai", cache_dir=str(tmp_path)))
    assert isinstance(judge, LLMJudge) and judge.seed == 7 and judge.cache_dir == str(tmp_path)
    assert judge.temperature == 0 and judge.response_format == "json_schema"
    text = " ".join((ROOT / "conf" / "judge" / f).read_text() for f in ("openai.yaml", "local.yaml"))
    assert "sk-" not in text and "api_key:" not in text  # no secrets in config
    if importlib.util.find_spec("llama_cpp") is not None:
        local = build(conf("judge", "local", cache_dir=str(tmp_path)))
        assert local.cache_model.startswith("local:smollm2:SmolLM2-135M-Instruct")


def test_the_method_file_builds_the_method_with_the_chosen_judge(monkeypatch):
    method = build(conf("method", "ablation"))
    assert (method.max_prompts, method.max_new_tokens, method.seed, method.layers, method.fast) == (32, 8, 7, None, True)
    assert isinstance(method, LayerAblation) and isinstance(method.judge, DeterministicJudge)
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    assert isinstance(build(conf("method", "ablation", judge="openai")).judge, LLMJudge)
    with pytest.raises(MedinterpError, match=r"^ablation: unknown setting\(s\) \['judge_name'\]; valid: .*max_prompts"):
        build({**conf("method", "ablation"), "judge_name": "x"})
