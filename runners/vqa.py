"""Medical VQA: a vision-language model answers a LLaVA-Med question file; the answers are scored per answer type.

    python runners/vqa.py model=tiny_llava domain=synthetic_xray
    python runners/vqa.py model=medgemma_4b model.path=/data/medgemma-4b-it questions=/data/slake/test.jsonl

Writes answers.jsonl (LLaVA-Med's answer layout), metrics.json (closed accuracy, open recall, 95 % CIs, counts),
per_question.csv, config.json (and questions.jsonl when exported from ``domain``) into the Hydra run folder,
then report.html (the generic summary report of its files) and W&B (conf/logger/). docs/multimodal.md, "VQA evaluation".
"""
from __future__ import annotations

import json
import logging
import sys
from pathlib import Path

from _common import (cached_model, check_group_choices, exit_cleanly_on_sigterm, launched_strategy, log,
                     private_run_dir_for_other_ranks, prompt_file_choices, publish, quiet_libraries, sweep_group,
                     user_errors)

import hydra  # noqa: E402
from hydra.core.hydra_config import HydraConfig  # noqa: E402
from omegaconf import DictConfig, OmegaConf  # noqa: E402

from medinterp.errors import MedinterpError, unknown_choice  # noqa: E402
from medinterp.io import write_json  # noqa: E402
from medinterp.methods import select_templates  # noqa: E402
from medinterp.models import ModelSpec  # noqa: E402
from medinterp.prompts import load_prompt_set  # noqa: E402
from medinterp.validation import check_positive_int, check_retired_settings, check_run_settings  # noqa: E402
from medinterp.vqa import Answer, export_questions, read_answers, read_questions, score_answers, write_answers  # noqa: E402
from medinterp.vqa import generate  # noqa: E402  (the module: tests replace generate.answer_texts)
from medinterp.vqa.results import ANSWERS_FILE, QUESTIONS_FILE, write_scores  # noqa: E402
from medinterp.vqa.score import CLOSED_RULES  # noqa: E402

STRATEGIES = ("single", "device_map", "zero3")  # zero3: every rank generates every answer (lockstep), rank 0 writes


def vqa_config(cfg: DictConfig) -> dict:
    """conf/vqa.yaml resolved into plain containers, its settings checked before anything is loaded."""
    plain = OmegaConf.to_container(cfg, resolve=True)
    check_retired_settings(plain)
    check_run_settings(batch_size=plain["batch_size"], seed=plain["seed"])
    check_positive_int("max_new_tokens", plain["max_new_tokens"])
    check_positive_int("max_questions", plain["max_questions"], allow_none=True)
    check_positive_int("n_boot", plain["n_boot"])
    if plain["closed_rule"] not in CLOSED_RULES:
        raise unknown_choice("closed_rule", plain["closed_rule"], CLOSED_RULES)
    strategy = (plain.get("strategy") or {}).get("name", "single")
    if strategy not in STRATEGIES:
        raise MedinterpError(f"strategy={strategy}: not for VQA generation; use strategy="
                             f"{' or strategy='.join(STRATEGIES)} (device_map spreads a large model over the GPUs, "
                             "zero3 shards it over ranks)")
    return plain


def question_file(cfg: DictConfig, out_dir: Path) -> tuple[Path, Path]:
    """(question file, image folder): ``questions=`` as given, or the ``domain`` image set exported into the run."""
    if cfg.questions:
        path = Path(cfg.questions).expanduser().absolute()
        return path, Path(cfg.image_folder).expanduser().absolute() if cfg.image_folder else path.parent
    prompt_set = load_prompt_set(cfg.domain.prompt_set)  # a text set: one line from export_questions
    path = export_questions(prompt_set, out_dir / QUESTIONS_FILE, select_templates(prompt_set, cfg.templates))
    return path, out_dir


def run_vqa(cfg: DictConfig, out_dir: Path) -> Path | None:
    """Answer, write and score the questions ``cfg`` names into ``out_dir`` (rank 0 writes and returns it; under
    zero3 the other ranks run the same generation, which gathers the weights, and return None)."""
    plain = vqa_config(cfg)
    out_dir.mkdir(parents=True, exist_ok=True)
    path, image_folder = question_file(cfg, out_dir)
    questions = read_questions(path)[:cfg.max_questions]  # before the model loads: a bad file costs nothing
    strategy = launched_strategy(json.dumps(plain["strategy"], sort_keys=True), cfg.device)
    log.info("model=%s questions=%s (%d) images=%s device=%s out=%s", cfg.model.name, path, len(questions),
             image_folder, cfg.device, out_dir)
    handle = cached_model(ModelSpec.from_dict(plain["model"]), strategy, cfg.cache_dir)
    generate.require_vlm(handle)
    texts = generate.answer_texts(handle, questions, image_folder, cfg.batch_size, cfg.max_new_tokens)
    strategy.barrier()
    if not strategy.is_rank_zero:
        return None
    answers_path = write_answers(out_dir / ANSWERS_FILE, [Answer.of(q, t, handle.name) for q, t in zip(questions, texts)])
    scores = score_answers(questions, read_answers(answers_path), cfg.closed_rule, cfg.n_boot, cfg.seed)
    write_scores(out_dir, scores, model=handle.name, questions=str(path), image_folder=str(image_folder),
                 max_new_tokens=cfg.max_new_tokens, closed_rule=cfg.closed_rule, n_boot=cfg.n_boot, seed=cfg.seed)
    write_json(out_dir / "config.json", plain)
    for row in scores.rows():
        log.info("%s %s = %.3f [%.3f, %.3f] (n=%d)%s", row["answer_type"], row["metric"], row["value"],
                 row["ci_low"], row["ci_high"], row["n"], f" ({row['note']})" if row["note"] else "")
    return out_dir


@hydra.main(config_path="../conf", config_name="vqa", version_base="1.3")
@user_errors
def main(cfg: DictConfig) -> None:
    quiet_libraries()
    out_dir = run_vqa(cfg, Path(HydraConfig.get().runtime.output_dir))
    if out_dir is not None:  # rank 0
        publish(out_dir, cfg, name=f"{HydraConfig.get().runtime.choices['model']}-vqa", job_type="vqa",
                group=sweep_group(), report="summary")  # report.html: the generic report (metrics, per-question table)
        log.info("results: %s", out_dir)


if __name__ == "__main__":
    exit_cleanly_on_sigterm()
    user_errors(check_group_choices)(sys.argv[1:], ("model", "domain", "strategy", "logger"))
    sys.argv[1:] = private_run_dir_for_other_ranks(sys.argv[1:])
    sys.argv[1:] = prompt_file_choices(sys.argv[1:])  # domain=<image set .yaml>: a choice as in runners/map.py
    logging.getLogger("medinterp").setLevel(logging.INFO)
    main()
