"""An image prompt set as a VQA question file (LLaVA-Med layout, medinterp/vqa/files.py).

One question per (item, template) that has a reference answer, item-major: ``question_id`` is
``<item id>-<template id>``, ``text`` the rendered question without the image placeholder (LLaVA-Med's
``model_vqa.py`` strips it too and puts its own in front), ``image`` the item's image relative to the
question file's folder, ``answer`` the item's answer for that template and ``answer_type`` the template's,
or, where the template declares none, ``closed`` for a yes/no answer and ``open`` otherwise.
"""
from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from medinterp.errors import MedinterpError
from medinterp.prompts.schema import PromptSet
from medinterp.vqa.files import Question, write_questions
from medinterp.vqa.score import normalize_answer


def answer_type(declared: str, answer: str) -> str:
    """The template's declared answer type, else ``closed`` for a yes/no answer and ``open`` for any other."""
    return declared or ("closed" if normalize_answer(answer) in ("yes", "no") else "open")


def questions_from_prompt_set(prompt_set: PromptSet, image_folder: str | os.PathLike[str],
                              templates: Sequence[str] | None = None) -> list[Question]:
    """The questions of an image prompt set (all templates, or ``templates`` in that order), with image paths
    relative to ``image_folder``."""
    if prompt_set.modality != "image":
        raise MedinterpError(f"prompt set {prompt_set.domain!r} is a text set; a VQA question file needs an image "
                             f"set (modality: image, e.g. synthetic_xray)")
    chosen = [prompt_set.template(t) for t in templates] if templates is not None else list(prompt_set.templates)
    prompts = {t.id: {p.item_id: p for p in prompt_set.prompts(t.id)} for t in chosen}
    questions = []
    for item in prompt_set.items:
        for template in chosen:
            if template.id not in item.answers:
                continue
            prompt = prompts[template.id][item.id]
            answer = item.answers[template.id]
            questions.append(Question(f"{item.id}-{template.id}", os.path.relpath(item.image, image_folder),
                                      prompt.question, answer,
                                      answer_type(template.answer_type, answer)))
    if not questions:
        raise MedinterpError(f"prompt set {prompt_set.domain!r} has no reference answers for templates "
                             f"{', '.join(t.id for t in chosen)}; give items 'answers' to export questions")
    return questions


def export_questions(prompt_set: PromptSet, path: str | os.PathLike[str],
                     templates: Sequence[str] | None = None) -> Path:
    """Write the question file of an image prompt set to ``path`` (images relative to its folder)."""
    path = Path(path)
    return write_questions(path, questions_from_prompt_set(prompt_set, path.parent.resolve(), templates))
