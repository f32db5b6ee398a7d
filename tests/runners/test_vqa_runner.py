"""runners/vqa.py: the answer file in LLaVA-Med's layout, scores equal to the scoring functions on it, planted
answers, one-line errors. In process (conf/vqa.yaml composed, ``run_vqa``); the CLI itself in the ``slow`` test."""
from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import pytest
from omegaconf import open_dict

from helpers import compose_map, run_runner, runner
from medinterp.errors import MedinterpError
from medinterp.vqa import read_answers, read_questions, score_answers, write_questions

QUICK = ["model=tiny_llava", "domain=synthetic_xray", "max_questions=14", "batch_size=4", "max_new_tokens=4",
         "logger=none", "n_boot=200"]


def run_vqa(overrides, out_dir: Path) -> Path:
    """``python runners/vqa.py *overrides`` in this process, without W&B (``publish``)."""
    cfg = compose_map(list(overrides), config_name="vqa")
    with open_dict(cfg):
        del cfg["hydra"]
    return runner("vqa").run_vqa(cfg, Path(out_dir))


def metrics(out: Path) -> dict:
    return json.loads((out / "metrics.json").read_text())


def by_type(out: Path) -> dict:
    return {row["answer_type"]: row for row in metrics(out)["scores"]}


@pytest.mark.parametrize("model", ["tiny_llava", "tiny_gemma3_vlm"])
def test_answers_are_written_in_the_layout_and_the_scores_are_the_scoring_of_that_file(tmp_path, model):
    out = run_vqa([*QUICK, f"model={model}"], tmp_path / "run")
    questions = read_questions(out / "questions.jsonl")[:14]
    lines = [json.loads(line) for line in (out / "answers.jsonl").read_text().splitlines()]
    assert [list(line) for line in lines] == [["question_id", "prompt", "text", "answer_id", "model_id", "metadata"]] * 14
    answers = read_answers(out / "answers.jsonl")
    assert [a.question_id for a in answers] == [q.question_id for q in questions]
    assert [a.prompt for a in answers] == [q.text for q in questions] and "<image>" not in answers[0].prompt
    assert {a.model_id for a in answers} == {model} and answers[0].answer_id == f"{model}-{questions[0].question_id}"
    want = score_answers(questions, answers, n_boot=200, seed=0)
    got = metrics(out)
    assert got["scores"] == json.loads(json.dumps(want.rows()))  # NaN-safe equality through JSON
    assert got["n_questions"] == 14 and got["counts"] == {r["answer_type"]: r["n"] for r in want.rows()}
    assert sum(got["counts"].values()) == 14 and min(got["counts"].values()) > 0  # both answer types present
    with open(out / "per_question.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [(r["question_id"], r["answer_type"], float(r["score"]), r["prediction"]) for r in rows] == \
        [(str(s.question_id), s.answer_type, s.score, s.prediction) for s in want.questions]
    assert json.loads((out / "config.json").read_text())["model"]["name"] == model
    again = run_vqa([*QUICK, f"model={model}"], tmp_path / "again")  # deterministic: the same bytes
    assert (again / "answers.jsonl").read_bytes() == (out / "answers.jsonl").read_bytes()
    assert (again / "per_question.csv").read_bytes() == (out / "per_question.csv").read_bytes()


def test_reference_answers_score_one_and_wrong_answers_zero(tmp_path, monkeypatch):
    """Planted: generation replaced by the reference answers -> closed accuracy 1 and open recall 1 with CIs [1, 1];
    by an answer sharing no word with any reference -> 0 for both."""
    generate = runner("vqa").generate
    monkeypatch.setattr(generate, "answer_texts", lambda handle, qs, *a, **k: [q.answer for q in qs])
    perfect = by_type(run_vqa([*QUICK, "max_questions=null"], tmp_path / "right"))
    for kind, metric in (("closed", "accuracy"), ("open", "recall")):
        assert perfect[kind]["metric"] == metric and perfect[kind]["n"] > 1
        assert (perfect[kind]["value"], perfect[kind]["ci_low"], perfect[kind]["ci_high"]) == (1.0, 1.0, 1.0)
    monkeypatch.setattr(generate, "answer_texts", lambda handle, qs, *a, **k: ["zzz"] * len(qs))
    wrong = by_type(run_vqa(QUICK, tmp_path / "wrong"))
    assert wrong["closed"]["value"] == wrong["open"]["value"] == 0.0


def test_a_question_file_with_its_own_image_folder(tmp_path, monkeypatch):
    """questions=<file> image_folder=<dir>: a LLaVA-Med file is answered from that folder; half the closed answers
    planted wrong give accuracy exactly 0.5."""
    src = run_vqa([*QUICK, "max_questions=1"], tmp_path / "export")  # the exported set, images relative to it
    questions = [q for q in read_questions(src / "questions.jsonl") if q.answer_type == "closed"][:8]
    write_questions(tmp_path / "q" / "test.jsonl", questions)
    generate = runner("vqa").generate
    monkeypatch.setattr(generate, "answer_texts",
                        lambda handle, qs, *a, **k: [q.answer if i % 2 else "maybe" for i, q in enumerate(qs)])
    out = run_vqa([*QUICK, f"questions={tmp_path / 'q' / 'test.jsonl'}", f"image_folder={src}"], tmp_path / "run")
    scores = by_type(out)
    assert scores["closed"]["value"] == 0.5 and scores["closed"]["n"] == 8
    assert math.isnan(scores["open"]["value"]) and scores["open"]["note"] == "no open questions"
    assert not (out / "questions.jsonl").exists()


@pytest.mark.parametrize("overrides, message", [
    (["domain=disease"], r"^prompt set 'disease' is a text set; a VQA question file needs an image set"),
    (["model=tiny_llama"], r"^model=tiny_llama is a text-only model; VQA needs a vision-language model"),
    (["questions=/nonexistent/q.jsonl"], r"^/nonexistent/q\.jsonl: question file not found$"),
    (["strategy=ddp"], r"^strategy=ddp: not for VQA generation; use strategy=single or strategy=device_map or "
                       r"strategy=zero3 \(device_map spreads"),
    (["max_new_tokens=0"], r"^The 'max_new_tokens' setting must be a positive integer; got 0\.$"),
    (["closed_rule=exact"], r"closed_rule"),
])
def test_bad_input_is_one_medinterp_error(tmp_path, overrides, message):
    with pytest.raises(MedinterpError, match=message) as err:
        run_vqa([*QUICK, *overrides], tmp_path / "run")
    assert "\n" not in str(err.value)


@pytest.mark.slow
def test_the_cli_writes_answers_and_scores_and_a_text_set_exits_2(tmp_path):
    out = tmp_path / "cli"
    run_runner("vqa.py", "model=tiny_llava", "domain=synthetic_xray", "max_new_tokens=8", f"hydra.run.dir={out}",
               env={"WANDB_MODE": "offline"})
    questions = read_questions(out / "questions.jsonl")
    assert len(read_answers(out / "answers.jsonl")) == len(questions) > 100
    assert "per_question.csv" in (out / "report.html").read_text()
    logged = json.loads((out / "wandb_logged.json").read_text())["summary"]  # the scores in the W&B run summary
    assert {f"vqa/{k}/{r['metric']}": r["value"] for k, r in by_type(out).items()} == \
        {k: v for k, v in logged.items() if k.count("/") == 2}
    proc = run_runner("vqa.py", "model=tiny_llava", "domain=disease", f"hydra.run.dir={tmp_path / 'bad'}", check=False)
    assert proc.returncode == 2 and proc.stderr.strip().splitlines() == [
        "error: prompt set 'disease' is a text set; a VQA question file needs an image set (modality: image, "
        "e.g. synthetic_xray)"]


@pytest.mark.slow
def test_zero3_on_two_ranks_writes_the_answers_of_single(tmp_path):
    """Two ranks, every weight sharded (threshold 0): each rank generates every answer in lockstep (synced_gpus),
    rank 0 writes the same answer file as one process; rank 1 writes nothing."""
    import subprocess

    from helpers import ROOT, torchrun_runner

    args = ["model=tiny_llava", "domain=synthetic_xray", "max_questions=6", "batch_size=3", "max_new_tokens=5",
            "logger=none", "n_boot=50", "device=cpu"]
    single = run_vqa(args, tmp_path / "single")
    cmd = torchrun_runner(2, "vqa.py", *args, "strategy=zero3", "strategy.param_persistence_threshold=0",
                          f"hydra.run.dir={tmp_path / 'zero3'}")
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=400)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "ZeRO-3 partitioned" in proc.stdout + proc.stderr
    ours = [(a.question_id, a.text) for a in read_answers(tmp_path / "zero3" / "answers.jsonl")]
    assert ours == [(a.question_id, a.text) for a in read_answers(single / "answers.jsonl")] and len(ours) == 6
    assert any(text for _, text in ours)  # not vacuous: the random model says something
    assert sorted(p.name for p in tmp_path.iterdir()) == ["single", "zero3"]
