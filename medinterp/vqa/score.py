"""VQA scoring as LLaVA-Med's own evaluation does it: closed questions by accuracy, open ones by token recall.

Reference: microsoft/LLaVA-Med, ``llava/eval/run_eval_batch.py`` with ``eval_metrics/evaluate_metrics.py``
and ``eval_metrics/glossary.py`` (commit ad758b6; the evaluation behind the VQA-RAD / SLAKE / PathVQA tables
of Li et al. 2023, "LLaVA-Med", NeurIPS Datasets & Benchmarks). Both texts are lower-cased and normalised by
:func:`normalize_answer`; then, per question,

- closed: ``hit = 1`` if the normalised reference is a *substring* of the normalised prediction, else 0;
  accuracy = mean hit. The substring rule is lenient ("no" is found in "normal", "yes" in "eyes"); rule
  ``word`` (not LLaVA-Med's) asks for the reference's words as a contiguous run of the prediction's words;
- open: ``recall = tp / (tp + fn)`` over whitespace words, with ``tp`` = the prediction's count of every word
  that also occurs in the reference and ``fn`` = the reference's count of every word missing from the
  prediction; 0 when either text is empty or tp = 0. As in LLaVA-Med, tp counts the *prediction's*
  repeats: reference "left lung", prediction "left left left" gives 3 / (3 + 1) = 0.75 (a set recall: 0.5).

Scores are fractions in [0, 1] (LLaVA-Med prints percentages). Each answer type's mean gets a percentile
bootstrap 95 % CI over questions (:func:`medinterp.metrics.bootstrap.finite_mean_with_ci`).
"""
from __future__ import annotations

import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from medinterp.errors import MedinterpError, unknown_choice
from medinterp.metrics.bootstrap import Scored, finite_mean_with_ci
from medinterp.prompts.schema import ANSWER_TYPES
from medinterp.vqa.files import Answer, Question

CLOSED_RULES = ("llava_med", "word")
METRIC = {"closed": "accuracy", "open": "recall"}  # the score of each answer type
PUNCTUATION = ';/[]"{}()=+\\_->@`,?!<'  # glossary.py's list; each is dropped or turned into a space
NUMBER_WORDS = {"none": "0", "zero": "0", "one": "1", "two": "2", "three": "3", "four": "4", "five": "5", "six": "6",
                "seven": "7", "eight": "8", "nine": "9", "ten": "10"}
ARTICLES = frozenset({"a", "an", "the"})
DIGIT_COMMA_DIGIT = re.compile(r"\d,\d")
PERIOD = re.compile(r"\.(?!\d)")  # a period not followed by a digit (glossary.py's period_strip in effect)
MAX_PERIODS = 32  # glossary.py passes re.UNICODE (32) where sub() takes its count: only the first 32 go


def normalize_answer(text: str) -> str:
    """LLaVA-Med's answer normalisation (``normalize_word`` after ``.lower()``).

    1. lower-case; 2. each punctuation mark of :data:`PUNCTUATION` is deleted if, in the text, it touches a
    space or the text has a digit-comma-digit, else it becomes a space; 3. the first 32 periods not followed
    by a digit are deleted; 4. words: number words zero..ten (and "none") become digits, articles a/an/the
    are dropped; 5. words joined by single spaces, commas deleted. LLaVA-Med also restores apostrophes of
    about 100 English contractions ("dont" -> "don't"); that table is not reproduced, so only such words
    can score differently.
    """
    text = text.lower()
    keep_together = bool(DIGIT_COMMA_DIGIT.search(text))
    out = text
    for mark in PUNCTUATION:
        touches_space = f"{mark} " in text or f" {mark}" in text
        out = out.replace(mark, "" if touches_space or keep_together else " ")
    out = PERIOD.sub("", out, count=MAX_PERIODS)
    words = [NUMBER_WORDS.get(w, w) for w in out.split()]
    return " ".join(w for w in words if w not in ARTICLES).replace(",", "")


def closed_hit(prediction: str, reference: str, rule: str = "llava_med") -> float:
    """1.0 if the prediction gives the reference answer, else 0.0 (``rule``: see the module docstring)."""
    pred, ref = normalize_answer(prediction), normalize_answer(reference)
    if rule == "llava_med":
        return float(ref in pred)
    if rule == "word":
        p, r = pred.split(), ref.split()
        return float(any(p[i:i + len(r)] == r for i in range(len(p) - len(r) + 1)))
    raise unknown_choice("closed rule", rule, CLOSED_RULES)


def open_recall(prediction: str, reference: str) -> float:
    """LLaVA-Med's recall of the reference's words in the prediction, in [0, 1] (module docstring)."""
    pred = Counter(normalize_answer(prediction).split())
    ref = Counter(normalize_answer(reference).split())
    if not pred or not ref:
        return 0.0
    tp = sum(count for word, count in pred.items() if word in ref)
    fn = sum(count for word, count in ref.items() if word not in pred)
    return tp / (tp + fn) if tp else 0.0


@dataclass(frozen=True)
class QuestionScore:
    """One scored question: its type, reference, the model's answer and the score (hit or recall)."""

    question_id: int | str
    answer_type: str
    reference: str
    prediction: str
    score: float


@dataclass(frozen=True)
class VqaScores:
    """Per answer type, the mean score with its CI (``by_type``: closed -> accuracy, open -> recall), and the
    per-question scores in question-file order."""

    by_type: dict[str, Scored]
    questions: tuple[QuestionScore, ...]

    def rows(self) -> list[dict[str, object]]:
        """One row per answer type: answer_type, metric, value, ci_low, ci_high, n, note."""
        return [{"answer_type": kind, "metric": METRIC[kind], "value": s.estimate.value, "ci_low": s.estimate.ci_low,
                 "ci_high": s.estimate.ci_high, "n": s.estimate.n, "note": s.note} for kind, s in self.by_type.items()]


def _matched(questions: Sequence[Question], answers: Sequence[Answer]) -> list[tuple[Question, Answer]]:
    """Pair every question with its answer by question_id; a missing or unknown id is one line."""
    by_id = {a.question_id: a for a in answers}
    missing = [q.question_id for q in questions if q.question_id not in by_id]
    if missing:
        raise MedinterpError(f"{len(missing)} of {len(questions)} questions have no answer (first: question_id "
                             f"{missing[0]!r}); answer every question or drop it from the question file")
    known = {q.question_id for q in questions}
    extra = [a.question_id for a in answers if a.question_id not in known]
    if extra:
        raise MedinterpError(f"{len(extra)} answers are for no question in the question file (first: question_id "
                             f"{extra[0]!r}); score an answer file against the question file it was made from")
    return [(q, by_id[q.question_id]) for q in questions]


def score_answers(questions: Sequence[Question], answers: Sequence[Answer], closed_rule: str = "llava_med",
                  n_boot: int = 200, seed: int = 0) -> VqaScores:
    """Score ``answers`` against ``questions`` (matched by question_id) per answer type, with bootstrap CIs.

    An answer type without questions gets NaN with the note "no <type> questions"; with one question the
    interval is NaN ("one question: no interval").
    """
    if closed_rule not in CLOSED_RULES:
        raise unknown_choice("closed rule", closed_rule, CLOSED_RULES)
    scored = []
    for question, answer in _matched(questions, answers):
        if question.answer_type == "closed":
            value = closed_hit(answer.text, question.answer, closed_rule)
        else:
            value = open_recall(answer.text, question.answer)
        scored.append(QuestionScore(question.question_id, question.answer_type, question.answer, answer.text, value))
    by_type = {}
    for kind in ANSWER_TYPES:
        values = np.array([s.score for s in scored if s.answer_type == kind], dtype=np.float64)
        estimate = finite_mean_with_ci(values, n_boot=n_boot, seed=seed)
        note = {0: f"no {kind} questions", 1: "one question: no interval"}.get(len(values), "")
        by_type[kind] = Scored(estimate, note)
    return VqaScores(by_type, tuple(scored))
