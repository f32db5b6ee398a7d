"""Question and answer files in the LLaVA-Med evaluation layout (JSON Lines: one JSON object per line).

Question file, one line per question (what ``llava/eval/model_vqa.py`` of microsoft/LLaVA-Med reads, plus the
reference for scoring)::

    {"question_id": 7, "image": "synpic123.jpg", "text": "Is there a pneumothorax?", "answer": "no", "answer_type": "closed"}

``image`` is relative to an image folder (by default the question file's own folder); ``answer_type`` is
``closed`` or ``open`` (LLaVA-Med's data spell them ``CLOSED``/``OPEN``: read case-insensitively, written
lower-case). Answer file, one line per answered question, in ``model_vqa.py``'s output layout::

    {"question_id": 7, "prompt": "Is there a pneumothorax?", "text": "No.", "answer_id": "tiny_llava-7", "model_id": "tiny_llava", "metadata": {}}

``text`` is the model's answer. ``answer_id`` is deterministic here (model id and question id; LLaVA-Med
draws a random uuid), so reruns write identical files. A bad line stops reading with one line:
``<file>: line <n>: <problem>``.
"""
from __future__ import annotations

import json
import os
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from medinterp.errors import MedinterpError
from medinterp.io import atomic_write
from medinterp.prompts.schema import ANSWER_TYPES
from medinterp.validation import is_int

QUESTION_FIELDS = ("question_id", "image", "text", "answer", "answer_type")
ANSWER_FIELDS = ("question_id", "prompt", "text", "answer_id", "model_id", "metadata")


@dataclass(frozen=True)
class Question:
    """One VQA question: the image (relative to an image folder), the question, its reference answer and type."""

    question_id: int | str
    image: str
    text: str
    answer: str
    answer_type: str

    def image_path(self, image_folder: str | os.PathLike[str]) -> Path:
        """The image's path: ``image`` joined to ``image_folder`` (an absolute ``image`` stays as it is)."""
        return Path(image_folder) / self.image


@dataclass(frozen=True)
class Answer:
    """A model's answer to one question (``text``), with the question as asked (``prompt``)."""

    question_id: int | str
    prompt: str
    text: str
    answer_id: str
    model_id: str
    metadata: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def of(cls, question: Question, text: str, model_id: str, **metadata: Any) -> Answer:
        """The answer ``text`` of model ``model_id`` to ``question``, with a deterministic ``answer_id``."""
        return cls(question.question_id, question.text, text, f"{model_id}-{question.question_id}", model_id,
                   dict(metadata))


def _records(path: Path, fields: tuple[str, ...], kind: str) -> Iterable[tuple[int, dict[str, Any]]]:
    """(line number, object) for every non-blank line, checked for JSON, an object, all ``fields`` and a
    unique question_id of type int or string."""
    if not path.is_file():
        raise MedinterpError(f"{path}: {kind} file not found")
    seen: dict[int | str, int] = {}  # question_id -> line
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        where = f"{path}: line {number}"
        try:
            record = json.loads(line)
        except json.JSONDecodeError as err:
            raise MedinterpError(f"{where}: not valid JSON ({err.msg}, column {err.colno})") from None
        if not isinstance(record, dict):
            raise MedinterpError(f"{where}: expected a JSON object, got {type(record).__name__}")
        for name in fields:
            if name not in record:
                raise MedinterpError(f"{where}: missing field '{name}' (a {kind} line has {', '.join(fields)})")
        qid = record["question_id"]
        if not (is_int(qid) or (isinstance(qid, str) and qid.strip())):
            raise MedinterpError(f"{where}: question_id must be an integer or a non-empty string, got {qid!r}")
        if qid in seen:
            raise MedinterpError(f"{where}: duplicate question_id {qid!r} (first on line {seen[qid]})")
        seen[qid] = number
        yield number, record


def _string(record: dict[str, Any], name: str, where: str, empty_ok: bool = False) -> str:
    value = record[name]
    if not isinstance(value, str) or (not empty_ok and not value.strip()):
        raise MedinterpError(f"{where}: '{name}' must be a {'' if empty_ok else 'non-empty '}string, got {value!r}")
    return value


def read_questions(path: str | os.PathLike[str]) -> list[Question]:
    """Read a question file (layout above), in file order."""
    path = Path(path)
    questions = []
    for number, record in _records(path, QUESTION_FIELDS, "question"):
        where = f"{path}: line {number}"
        answer_type = _string(record, "answer_type", where).lower()
        if answer_type not in ANSWER_TYPES:
            raise MedinterpError(f"{where}: answer_type must be one of {', '.join(ANSWER_TYPES)} (any case), "
                                 f"got {record['answer_type']!r}")
        questions.append(Question(record["question_id"], _string(record, "image", where), _string(record, "text", where),
                                  _string(record, "answer", where), answer_type))
    if not questions:
        raise MedinterpError(f"{path}: no questions (the file is empty)")
    return questions


def read_answers(path: str | os.PathLike[str]) -> list[Answer]:
    """Read an answer file (layout above), in file order; ``metadata`` may be absent (then {})."""
    path = Path(path)
    answers = []
    for number, record in _records(path, ANSWER_FIELDS[:3], "answer"):
        where = f"{path}: line {number}"
        metadata = record.get("metadata", {})
        if not isinstance(metadata, dict):
            raise MedinterpError(f"{where}: 'metadata' must be a JSON object, got {metadata!r}")
        answers.append(Answer(record["question_id"], _string(record, "prompt", where, empty_ok=True),
                              _string(record, "text", where, empty_ok=True), str(record.get("answer_id", "")),
                              str(record.get("model_id", "")), metadata))
    return answers


def _write_lines(path: str | os.PathLike[str], records: Iterable[dict[str, Any]]) -> Path:
    """Atomically write one compact JSON object per line (UTF-8, non-ASCII kept)."""
    def write(f: Any) -> None:
        for record in records:
            f.write(json.dumps(record, ensure_ascii=False) + "\n")
    return atomic_write(path, write, newline="\n")


def write_questions(path: str | os.PathLike[str], questions: Iterable[Question]) -> Path:
    """Write a question file (fields in the layout's order)."""
    return _write_lines(path, (asdict(q) for q in questions))


def write_answers(path: str | os.PathLike[str], answers: Iterable[Answer]) -> Path:
    """Write an answer file (fields in ``model_vqa.py``'s order)."""
    return _write_lines(path, (asdict(a) for a in answers))
