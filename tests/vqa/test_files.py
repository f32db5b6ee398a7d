"""LLaVA-Med question/answer files: round trips, the exact layout, and one-line errors."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from medinterp.errors import MedinterpError
from medinterp.vqa import Answer, Question, read_answers, read_questions, write_answers, write_questions

QUESTIONS = [Question(1, "img/a.png", "Is there an opacity?", "yes", "closed"),
             Question("x-2", "/abs/b.jpg", "Où est la lésion?", "poumon gauche", "open")]


def test_questions_round_trip_in_the_layout(tmp_path):
    path = write_questions(tmp_path / "q.jsonl", QUESTIONS)
    lines = path.read_text(encoding="utf-8").splitlines()
    assert lines[0] == ('{"question_id": 1, "image": "img/a.png", "text": "Is there an opacity?", "answer": "yes", '
                        '"answer_type": "closed"}')
    assert "Où est la lésion?" in lines[1]  # UTF-8, not \\u escapes
    assert read_questions(path) == QUESTIONS
    assert QUESTIONS[0].image_path(tmp_path) == tmp_path / "img" / "a.png"
    assert QUESTIONS[1].image_path(tmp_path) == Path("/abs/b.jpg")


def test_answers_round_trip_in_model_vqa_layout(tmp_path):
    answers = [Answer.of(QUESTIONS[0], "Yes.", "tiny_llava", temperature=0.0), Answer.of(QUESTIONS[1], "", "tiny_llava")]
    path = write_answers(tmp_path / "a.jsonl", answers)
    first = json.loads(path.read_text().splitlines()[0])
    assert list(first) == ["question_id", "prompt", "text", "answer_id", "model_id", "metadata"]
    assert first == {"question_id": 1, "prompt": "Is there an opacity?", "text": "Yes.", "answer_id": "tiny_llava-1",
                     "model_id": "tiny_llava", "metadata": {"temperature": 0.0}}
    assert read_answers(path) == answers
    assert write_answers(tmp_path / "b.jsonl", answers).read_bytes() == path.read_bytes()  # deterministic


def test_llava_med_spellings_are_read(tmp_path):
    """LLaVA-Med's data spell answer types CLOSED/OPEN; its answer files may lack metadata; blank lines are skipped."""
    (tmp_path / "q.jsonl").write_text('{"question_id": 5, "image": "i.jpg", "text": "Q?", "answer": "no", '
                                      '"answer_type": "CLOSED"}\n\n')
    assert read_questions(tmp_path / "q.jsonl")[0].answer_type == "closed"
    (tmp_path / "a.jsonl").write_text('{"question_id": 5, "prompt": "Q?", "text": "No"}\n')
    assert read_answers(tmp_path / "a.jsonl") == [Answer(5, "Q?", "No", "", "", {})]


GOOD = '{"question_id": 1, "image": "a.png", "text": "Q?", "answer": "yes", "answer_type": "closed"}'
BAD = [
    ("not json", "{oops", "line 1: not valid JSON (Expecting property name enclosed in double quotes, column 2)"),
    ("a list", "[1, 2]", "line 1: expected a JSON object, got list"),
    ("missing field", '{"question_id": 1, "image": "a.png", "text": "Q?", "answer": "yes"}',
     "line 1: missing field 'answer_type' (a question line has question_id, image, text, answer, answer_type)"),
    ("bad type", GOOD.replace('"closed"', '"multiple"'),
     "line 1: answer_type must be one of closed, open (any case), got 'multiple'"),
    ("bool id", GOOD.replace('"question_id": 1', '"question_id": true'),
     "line 1: question_id must be an integer or a non-empty string, got True"),
    ("duplicate", GOOD + "\n" + GOOD, "line 2: duplicate question_id 1 (first on line 1)"),
    ("empty answer", GOOD.replace('"answer": "yes"', '"answer": ""'), "line 1: 'answer' must be a non-empty string"),
    ("nothing", "\n", "no questions (the file is empty)"),
]


@pytest.mark.parametrize(("case", "text", "expected"), BAD, ids=[b[0] for b in BAD])
def test_bad_question_files_are_one_line(tmp_path, case, text, expected):
    path = tmp_path / "q.jsonl"
    path.write_text(text + "\n")
    with pytest.raises(MedinterpError) as info:
        read_questions(path)
    assert str(info.value).startswith(f"{path}: {expected}")
    assert "\n" not in str(info.value)


def test_missing_files_are_one_line(tmp_path):
    with pytest.raises(MedinterpError, match=r"q\.jsonl: question file not found$"):
        read_questions(tmp_path / "q.jsonl")
    with pytest.raises(MedinterpError, match=r"a\.jsonl: answer file not found$"):
        read_answers(tmp_path / "a.jsonl")
