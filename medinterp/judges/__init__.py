"""Judges for the ablation method: score a lesioned answer from 1 (no change) to 10 (gibberish).

base           JudgeItem, Verdict, Judge protocol, registry (register_judge, judge_class, make_judge)
deterministic  DeterministicJudge ("deterministic", the default): a calibrated map of KL onto 1..10
llm            LLMJudge ("openai"): any OpenAI-compatible endpoint; blind, order-randomised, strict JSON, cached
local_server   LocalJudge ("local"): LLMJudge against a llama-cpp-python server started and stopped here
cache          VerdictCache: one JSON file per request hash under <cache_dir>/judge/

Registry keys equal the files in ``conf/judge/``. Build a judge with ``make_judge(name, settings, cache_dir)``.
"""
from medinterp.judges import deterministic, llm, local_server  # noqa: F401  (registration)
from medinterp.judges.base import (Judge, JudgeItem, Verdict, judge_class, make_judge, register_judge,
                                   registered_judges)
from medinterp.judges.deterministic import KAPPA, DeterministicJudge, kl_to_score
from medinterp.judges.llm import RUBRIC, RUBRIC_VERSION, LLMJudge
from medinterp.judges.local_server import LocalJudge, llama_server

__all__ = ["KAPPA", "RUBRIC", "RUBRIC_VERSION", "DeterministicJudge", "Judge", "JudgeItem", "LLMJudge", "LocalJudge",
           "Verdict", "judge_class", "kl_to_score", "llama_server", "make_judge", "register_judge", "registered_judges"]
