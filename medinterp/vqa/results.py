"""A VQA run's results: the answer file, the scores per answer type, one row per question.

A VQA results folder (written by ``runners/vqa.py``; docs/multimodal.md "VQA")::

    answers.jsonl       the model's answers, LLaVA-Med's answer layout (medinterp/vqa/files.py)
    metrics.json        per answer type the score (closed: accuracy, open: recall) with its bootstrap 95 % CI,
                        the number of questions, and a note when the value is NaN or has no interval
    per_question.csv    question_id, answer_type, metric, score, reference, prediction (question-file order)
    questions.jsonl     the question file, when it was exported from an image prompt set (``domain``)
    config.json         the resolved configuration

The scores are :func:`medinterp.vqa.score.score_answers` of the answer file as written, so reading
``answers.jsonl`` back and scoring it gives ``metrics.json`` again.
"""
from __future__ import annotations

import csv
import os
from pathlib import Path
from typing import Any

from medinterp.io import atomic_write, write_json
from medinterp.vqa.score import METRIC, VqaScores

ANSWERS_FILE = "answers.jsonl"
METRICS_FILE = "metrics.json"
PER_QUESTION_FILE = "per_question.csv"
QUESTIONS_FILE = "questions.jsonl"
PER_QUESTION_COLUMNS = ("question_id", "answer_type", "metric", "score", "reference", "prediction")


def metrics_record(scores: VqaScores, **context: Any) -> dict[str, Any]:
    """metrics.json's content: ``context`` (model, question file, settings), the question counts per answer
    type and ``scores``: one row per answer type (answer_type, metric, value, ci_low, ci_high, n, note)."""
    counts = {row["answer_type"]: row["n"] for row in scores.rows()}
    return {**context, "n_questions": len(scores.questions), "counts": counts, "scores": scores.rows()}


def write_per_question(path: str | os.PathLike[str], scores: VqaScores) -> Path:
    """per_question.csv: one row per scored question (columns :data:`PER_QUESTION_COLUMNS`)."""
    def write(f: Any) -> None:
        out = csv.writer(f)
        out.writerow(PER_QUESTION_COLUMNS)
        for s in scores.questions:
            out.writerow([s.question_id, s.answer_type, METRIC[s.answer_type], repr(s.score), s.reference,
                          s.prediction])
    return atomic_write(path, write, newline="")


def write_scores(folder: str | os.PathLike[str], scores: VqaScores, **context: Any) -> Path:
    """metrics.json and per_question.csv into ``folder``; returns metrics.json's path."""
    folder = Path(folder)
    write_per_question(folder / PER_QUESTION_FILE, scores)
    return write_json(folder / METRICS_FILE, metrics_record(scores, **context))
