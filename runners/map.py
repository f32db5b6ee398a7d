"""Map one (model, domain, method) cell, or a Hydra multirun of cells.

    python runners/map.py model=smollm2_135m domain=drugs method=umap
    python runners/map.py -m domain=age,drugs model=gemma3_270m,smollm2_135m
    torchrun --nproc_per_node=8 runners/map.py strategy=zero3 model=llama33_70b model.path=/data/Llama-3.3-70B-Instruct

Writes per_layer.csv, per_item.csv, summary.json, figures into the Hydra run folder (rank 0; docs/distributed.md).
"""
from __future__ import annotations

import contextlib
import json
import logging
import sys
from pathlib import Path

from _common import (cached_model, check_group_choices, exit_cleanly_on_sigterm, launched_strategy, log,
                     log_run_warnings, map_config, private_run_dir_for_other_ranks, prompt_file_choices,
                     prompt_set_domain, publish, quiet_libraries, sweep_group, user_errors)

import hydra  # noqa: E402
from hydra.core.hydra_config import HydraConfig  # noqa: E402
from omegaconf import DictConfig  # noqa: E402

from medinterp.cell import Cell  # noqa: E402
from medinterp.methods import select_templates  # noqa: E402
from medinterp.methods.tokens import token_type  # noqa: E402
from medinterp.models import ModelSpec  # noqa: E402
from medinterp.prompts import load_prompt_set  # noqa: E402
from medinterp.registry import build  # noqa: E402
from medinterp.results import RunWriter  # noqa: E402
from medinterp.resume import Checkpoints  # noqa: E402
from medinterp.run import run_cell  # noqa: E402


def run_map(cfg: DictConfig, out_dir: Path) -> Path | None:
    """Build the cell ``cfg`` describes and run it into ``out_dir`` (rank 0 writes; other ranks return None)."""
    plain = map_config(cfg)  # checked settings; config.json: the resolved config and Hydra's group choices
    strategy = launched_strategy(json.dumps(plain.get("strategy", {"name": "single"}), sort_keys=True), cfg.device)
    prompt_set = load_prompt_set(cfg.domain.prompt_set)
    method = build(plain["method"])
    prompt_set.require_modality(f"method={method.name}", method.modalities)  # before loading the model
    token_type(method.name, getattr(method, "tokens", None), prompt_set)  # tokens=image on a text set: one line
    if method.needs_items:  # a patching-only prompt set: say so before loading the model
        prompt_set.require_items(f"method={method.name}")
    rank0 = strategy.is_rank_zero
    log.info("model=%s domain=%s method=%s device=%s %s cache=%s out=%s", cfg.model.name, prompt_set.domain,
             method.name, cfg.device, strategy.describe(), cfg.cache_dir, out_dir if rank0 else "(rank 0 writes)")
    cell = Cell(cached_model(ModelSpec.from_dict(plain["model"]), strategy, cfg.cache_dir), prompt_set, method,
                select_templates(prompt_set, cfg.templates), plain["domain"]["labelings"], cfg.reduction, cfg.batch_size,
                cfg.batch_tokens, cfg.seed, Path(cfg.cache_dir) if cfg.use_activation_cache else None,
                {k: v for k, v in plain["method"].items() if k != "_target_"}, strategy)
    checkpoints = Checkpoints(Path(cfg.cache_dir) / "resume" / cell.key() if cfg.resume and rank0 else None)
    with getattr(method, "judge", None) or contextlib.nullcontext():  # a local judge keeps one server up for the run
        run_cell(cell, RunWriter(out_dir) if rank0 else None, checkpoints, cfg.plots, plain)
    strategy.barrier()
    return out_dir if rank0 else None


@hydra.main(config_path="../conf", config_name="map", version_base="1.3")
@user_errors
def main(cfg: DictConfig) -> None:
    quiet_libraries()
    choices = HydraConfig.get().runtime.choices
    out_dir = run_map(cfg, Path(HydraConfig.get().runtime.output_dir))
    if out_dir is not None:  # rank 0, results written: report.html, then W&B (conf/logger/)
        publish(out_dir, cfg, name=f"{choices['model']}-{prompt_set_domain(cfg.domain.prompt_set)}-{choices['method']}",
                job_type=choices["method"], group=sweep_group(), report="run")
        log.info("results: %s", out_dir)
        log_run_warnings(out_dir)  # last, so a degraded run (judge outage) ends its log saying so


if __name__ == "__main__":
    exit_cleanly_on_sigterm()
    user_errors(check_group_choices)(sys.argv[1:], ("model", "domain", "method", "judge", "strategy", "logger"))
    sys.argv[1:] = private_run_dir_for_other_ranks(prompt_file_choices(sys.argv[1:]))  # domain=<file.yaml>: a choice
    logging.getLogger("medinterp").setLevel(logging.INFO)
    main()
