"""VQA scoring: LLaVA-Med's normalisation, closed accuracy and open recall, by hand; CIs per answer type."""
from __future__ import annotations

import math

import numpy as np
import pytest

from medinterp.errors import MedinterpError
from medinterp.metrics.bootstrap import mean_with_ci
from medinterp.vqa import Answer, Question, closed_hit, normalize_answer, open_recall, score_answers


@pytest.mark.parametrize(("text", "normalised"), [
    ("Yes, there is.", "yes there is"),  # ", " touches a space: the comma goes; the final period goes
    ("The opacity is in the left lobe.", "opacity is in left lobe"),  # articles dropped
    ("left-sided (PA) view", "left sided pa view"),  # '-' touches no space: a space; '(' touches one: deleted
    ("x-ray shows 1,000 cells", "xray shows 1000 cells"),  # a digit,digit anywhere: every mark is deleted
    ("Two nodules, none calcified", "2 nodules 0 calcified"),  # number words, and 'none' -> 0
    ("dose 2.5 mg.", "dose 2.5 mg"),  # a period before a digit stays
    ("An X-ray?", "x ray"),
])
def test_normalisation_by_hand(text, normalised):
    assert normalize_answer(text) == normalised


def test_only_the_first_32_periods_go():
    """LLaVA-Med passes re.UNICODE (= 32) as sub()'s count: period 33 onwards stays."""
    assert normalize_answer("." * 40) == "." * 8


@pytest.mark.parametrize(("prediction", "reference", "llava_med", "word"), [
    ("Yes, there is.", "yes", 1.0, 1.0),
    ("Normal", "no", 1.0, 0.0),  # LLaVA-Med's substring rule finds "no" in "normal"
    ("no", "yes", 0.0, 0.0),
    ("The left lung.", "left lung", 1.0, 1.0),
    ("lung left", "left lung", 0.0, 0.0),
    ("", "yes", 0.0, 0.0),
])
def test_closed_hit_by_hand(prediction, reference, llava_med, word):
    assert closed_hit(prediction, reference) == llava_med
    assert closed_hit(prediction, reference, "word") == word


@pytest.mark.parametrize(("prediction", "reference", "recall"), [
    ("The opacity is in the left lobe.", "left upper lobe", 2 / 3),  # tp = left + lobe = 2, fn = upper = 1
    ("left left left", "left lung", 3 / 4),  # tp counts the prediction's repeats (LLaVA-Med): 3 / (3 + 1)
    ("left", "left left", 1.0),  # fn counts only missing words: 1 / (1 + 0)
    ("2 nodules", "two", 1.0),  # 'two' -> '2'
    ("right lung", "left lung", 1 / 2),
    ("nothing here", "left lung", 0.0),
    ("", "left lung", 0.0),
    ("the", "left lung", 0.0),  # only an article: empty after normalisation
])
def test_open_recall_by_hand(prediction, reference, recall):
    assert open_recall(prediction, reference) == pytest.approx(recall)


def test_unknown_closed_rule_is_one_line():
    with pytest.raises(MedinterpError, match=r"^unknown closed rule 'exact'; valid: llava_med, word$"):
        closed_hit("yes", "yes", "exact")


QUESTIONS = [
    Question(1, "a.png", "Is there an opacity?", "yes", "closed"),
    Question(2, "a.png", "Is it normal?", "no", "closed"),
    Question("q3", "b.png", "Is there a mass?", "yes", "closed"),
    Question(4, "b.png", "Where is it?", "left upper lobe", "open"),
    Question(5, "c.png", "Which lung?", "left lung", "open"),
    Question(6, "c.png", "How many nodules?", "two", "open"),
]
PREDICTIONS = {1: "Yes, there is.", 2: "Normal", "q3": "no", 4: "The opacity is in the left lobe.",
               5: "left left left", 6: "2 nodules"}


def answers(predictions=PREDICTIONS) -> list[Answer]:
    by_id = {q.question_id: q for q in QUESTIONS}
    return [Answer.of(by_id[qid], text, "model") for qid, text in reversed(predictions.items())]  # any order


def test_scores_per_answer_type_by_hand():
    scores = score_answers(QUESTIONS, answers())
    closed, open_ = scores.by_type["closed"], scores.by_type["open"]
    assert closed.estimate.value == pytest.approx(2 / 3) and closed.estimate.n == 3
    assert open_.estimate.value == pytest.approx((2 / 3 + 3 / 4 + 1) / 3) and open_.estimate.n == 3
    assert [s.score for s in scores.questions] == pytest.approx([1, 1, 0, 2 / 3, 3 / 4, 1])
    assert [s.question_id for s in scores.questions] == [1, 2, "q3", 4, 5, 6]  # question-file order
    word = score_answers(QUESTIONS, answers(), closed_rule="word").by_type["closed"]
    assert word.estimate.value == pytest.approx(1 / 3)


def test_the_interval_is_the_shared_bootstrap_of_the_per_question_scores():
    scores = score_answers(QUESTIONS, answers(), n_boot=500, seed=3)
    reference = mean_with_ci(np.array([1.0, 1.0, 0.0]), n_boot=500, seed=3)
    got = scores.by_type["closed"].estimate
    assert (got.ci_low, got.ci_high) == (reference.ci_low, reference.ci_high)
    assert got.ci_low <= got.value <= got.ci_high and got.ci_low < got.ci_high
    rows = scores.rows()
    assert [(r["answer_type"], r["metric"], r["n"], r["note"]) for r in rows] == [("closed", "accuracy", 3, ""),
                                                                                  ("open", "recall", 3, "")]


def test_a_missing_type_is_nan_with_a_note():
    closed_only = QUESTIONS[:1]
    scores = score_answers(closed_only, answers({1: "yes"}))
    assert scores.by_type["closed"].estimate.value == 1.0 and math.isnan(scores.by_type["closed"].estimate.ci_low)
    assert scores.by_type["closed"].note == "one question: no interval"
    assert math.isnan(scores.by_type["open"].estimate.value) and scores.by_type["open"].estimate.n == 0
    assert scores.by_type["open"].note == "no open questions"


def test_unmatched_answers_are_one_line():
    with pytest.raises(MedinterpError, match=r"^1 of 6 questions have no answer \(first: question_id 'q3'\)"):
        score_answers(QUESTIONS, answers({k: v for k, v in PREDICTIONS.items() if k != "q3"}))
    stray = answers() + [Answer(99, "?", "yes", "model-99", "model")]
    with pytest.raises(MedinterpError, match=r"^1 answers are for no question in the question file \(first: "
                                             r"question_id 99\)"):
        score_answers(QUESTIONS, stray)
