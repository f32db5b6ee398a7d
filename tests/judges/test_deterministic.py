"""The deterministic judge's KL → 1..10 calibration and the judge registry."""
from __future__ import annotations

import math

import numpy as np
import pytest

from medinterp.errors import MedinterpError
from medinterp.judges import KAPPA, DeterministicJudge, JudgeItem, judge_class, kl_to_score, make_judge, registered_judges


def test_calibration_starts_at_one_is_monotone_and_bounded_by_ten():
    assert kl_to_score(0.0) == 1.0
    kl = np.concatenate([[0.0], np.logspace(-4, 3, 200)])
    s = kl_to_score(kl)
    assert np.all(np.diff(s[s < 9.999]) > 0)  # strictly increasing until float saturation near 10
    assert np.all(np.diff(s) >= 0) and np.all(s >= 1.0) and np.all(s <= 10.0)
    assert kl_to_score(1e6) == pytest.approx(10.0)
    assert kl_to_score(-1e-9) == 1.0  # round-off below zero is zero
    assert math.isnan(kl_to_score(math.nan))


def test_calibration_anchors():
    # score(kappa) = 1 + 9(1 - 1/e); score 9.5 at kappa * ln 18 (the documented "gibberish" anchor, 7.2 nats)
    assert kl_to_score(KAPPA) == pytest.approx(1 + 9 * (1 - math.exp(-1)))
    assert kl_to_score(KAPPA * math.log(18)) == pytest.approx(9.5)
    assert kl_to_score(7.2) == pytest.approx(9.5, abs=0.01)
    assert kl_to_score(0.1) < 1.5  # a typical middle block of SmolLM2 barely moves the score
    assert kl_to_score(2.0, kappa=1.0) == pytest.approx(1 + 9 * (1 - math.exp(-2)))
    with pytest.raises(MedinterpError, match="kappa"):
        kl_to_score(1.0, kappa=0)


def test_deterministic_judge_scores_from_kl_and_marks_nan_missing():
    judge = DeterministicJudge()
    items = [JudgeItem("p", "a", None, kl, 0.0) for kl in (0.0, 1.0, math.nan)]
    v = judge.score(items)
    assert [x.score for x in v[:2]] == [1.0, pytest.approx(kl_to_score(1.0))]
    assert v[2].missing and v[2].missing_reason == "KL is NaN" and math.isnan(v[2].value)
    assert judge.needs_text is False
    with judge as same:  # a no-op context manager
        assert same is judge
    with pytest.raises(MedinterpError, match="kappa"):
        DeterministicJudge(kappa=-1)


def test_registry_builds_judges_from_settings_and_names_the_valid_choices():
    assert {"deterministic", "openai", "local"} <= set(registered_judges())
    assert judge_class("deterministic") is DeterministicJudge
    assert make_judge("deterministic", {"kappa": 2.0}).kappa == 2.0
    with pytest.raises(MedinterpError, match=r"unknown judge 'gpt'; valid: .*deterministic"):
        make_judge("gpt")
    with pytest.raises(MedinterpError, match=r"unknown setting\(s\) \['temp'\]"):
        make_judge("deterministic", {"temp": 0})
