"""Medical VQA without a model: LLaVA-Med question/answer files, their scoring, and image prompt sets as questions.

See ``docs/multimodal-data.md``: :mod:`medinterp.vqa.files` reads and writes the JSON Lines layout,
:mod:`medinterp.vqa.score` scores closed questions by accuracy and open ones by token recall (LLaVA-Med's
definitions) with bootstrap CIs, and :mod:`medinterp.vqa.export` turns an image prompt set (e.g.
``synthetic_xray``) into a question file.
"""
from __future__ import annotations

from medinterp.vqa.export import export_questions, questions_from_prompt_set
from medinterp.vqa.files import Answer, Question, read_answers, read_questions, write_answers, write_questions
from medinterp.vqa.score import VqaScores, closed_hit, normalize_answer, open_recall, score_answers

__all__ = [
    "Answer",
    "Question",
    "VqaScores",
    "closed_hit",
    "export_questions",
    "normalize_answer",
    "open_recall",
    "questions_from_prompt_set",
    "read_answers",
    "read_questions",
    "score_answers",
    "write_answers",
    "write_questions",
]
