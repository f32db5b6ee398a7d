"""synthetic_xray as a VQA question file, scored with planted answers."""
from __future__ import annotations

from pathlib import Path

import pytest

from medinterp.errors import MedinterpError
from medinterp.prompts import load_prompt_set
from medinterp.prompts.synthetic_xray import synthetic_xray
from medinterp.vqa import Answer, export_questions, read_questions, score_answers
from medinterp.vqa.export import answer_type


@pytest.fixture(scope="module")
def xray(tmp_path_factory):
    return load_prompt_set(synthetic_xray(tmp_path_factory.mktemp("cache"), n_items=10, size=48))


def test_every_item_and_question_is_exported(xray, tmp_path):
    path = export_questions(xray, tmp_path / "vqa" / "questions.jsonl")
    questions = read_questions(path)
    assert len(questions) == 10 * 7
    first = questions[0]
    assert first.question_id == "xray_000-left_lung" and first.text == "Is there an opacity in the left lung?"
    assert first.image_path(path.parent).resolve() == Path(xray.items[0].image)
    assert first.answer == xray.items[0].answers["left_lung"]
    kinds = {q.question_id.split("-")[1]: q.answer_type for q in questions}
    assert kinds == {"left_lung": "closed", "right_lung": "closed", "upper_lobe": "closed", "any_opacity": "closed",
                     "which_lung": "open", "which_lobe": "open", "finding": "open"}
    assert all("<image>" not in q.text for q in questions)


def test_reference_answers_score_perfectly_and_always_yes_scores_the_yes_rate(xray, tmp_path):
    questions = read_questions(export_questions(xray, tmp_path / "q.jsonl", templates=["any_opacity", "which_lobe"]))
    assert len(questions) == 20
    perfect = score_answers(questions, [Answer.of(q, q.answer, "oracle") for q in questions])
    assert perfect.by_type["closed"].estimate.value == 1.0 and perfect.by_type["open"].estimate.value == 1.0
    yes = score_answers(questions, [Answer.of(q, "Yes.", "yes-man") for q in questions])
    present = sum(item.labels["presence"] == "present" for item in xray.items)  # 8 of 10: 'yes' is right for these
    assert yes.by_type["closed"].estimate.value == pytest.approx(present / 10)
    assert yes.by_type["open"].estimate.value == 0.0


def test_answer_type_falls_back_to_yes_no():
    assert answer_type("", "Yes.") == "closed" and answer_type("", "left lung") == "open"
    assert answer_type("closed", "left") == "closed"


def test_a_text_set_is_refused():
    with pytest.raises(MedinterpError, match=r"^prompt set 'drugs' is a text set; a VQA question file needs an image"):
        export_questions(load_prompt_set("drugs"), "unused.jsonl")
