"""Map one (model, domain, method) cell, or a Hydra multirun of cells.

    python runners/map.py model=smollm2_135m domain=drugs method=umap
    python runners/map.py -m domain=age,drugs model=gemma3_270m,smollm2_135m
    torchrun --nproc_per_node=8 runners/map.py strategy=zero3 model=llama33_70b model.path=/data/Llama-3.3-70B-Instruct

Writes per_layer.csv, summary.json and figures into the Hydra run folder (printed at the end). Under a
multi-process strategy (ddp, zero3; docs/distributed.md) every rank runs this script; rank 0 alone writes
results, and the other ranks never create or touch the output folder: before Hydra starts they are
pointed at a private temporary folder (Hydra would otherwise create the run folder on every rank).
"""
from __future__ import annotations

import atexit
import contextlib
import functools
import json
import logging
import shutil
import sys
import tempfile
import time
from pathlib import Path

from _common import (check_group_choices, exit_cleanly_on_sigterm, log, log_run_warnings, prompt_file_choices,
                     prompt_set_domain, publish, quiet_libraries, sweep_group, user_errors)

import hydra  # noqa: E402
from hydra.core.hydra_config import HydraConfig  # noqa: E402
from omegaconf import DictConfig, OmegaConf  # noqa: E402

from medinterp.capture.limits import DEFAULT_MAX_BATCH_TOKENS  # noqa: E402
from medinterp.distributed import Checkpoints, Strategy, launcher_rank, make_strategy, resume_key  # noqa: E402
from medinterp.judges import make_judge  # noqa: E402
from medinterp.methods import method_class, select_templates  # noqa: E402
from medinterp.models import ModelSpec  # noqa: E402
from medinterp.pipeline import run_cell  # noqa: E402
from medinterp.prompts import load_prompt_set  # noqa: E402
from medinterp.results import RunWriter  # noqa: E402
from medinterp.validation import check_run_settings  # noqa: E402


@functools.lru_cache(maxsize=1)  # one process group per process, even across a multirun's cells
def launched_strategy(config_json: str, device: str) -> Strategy:
    strategy = make_strategy(json.loads(config_json), device).launch()
    atexit.register(strategy.teardown)
    return strategy


@functools.lru_cache(maxsize=1)  # a multirun over domains loads the model once
def cached_model(spec: ModelSpec, strategy: Strategy, cache_dir: str):
    return strategy.load(spec, Path(cache_dir))


def strategy_config(cfg: DictConfig) -> dict:
    """``cfg.strategy`` as a plain dict (``single`` when the config has no strategy group)."""
    node = OmegaConf.select(cfg, "strategy")
    return OmegaConf.to_container(node, resolve=True) if node is not None else {"name": "single"}


def cell_key(cfg: DictConfig, method_name: str, templates: list[str], prompt_sha: str) -> str:
    """The resume key of a cell: what decides its numbers, not where or how it runs (medinterp/distributed/resume.py)."""
    return resume_key({"model": OmegaConf.to_container(cfg.model, resolve=True), "prompt_set": cfg.domain.prompt_set,
                       "sha256": prompt_sha, "method": method_name, "settings": OmegaConf.to_container(cfg.method, resolve=True),
                       "templates": templates, "labelings": OmegaConf.to_container(OmegaConf.create({"l": cfg.domain.labelings}))["l"],
                       "reduction": cfg.reduction, "batch_size": cfg.batch_size, "seed": cfg.seed,
                       **budget_key(cfg)})


def budget_key(cfg: DictConfig) -> dict:
    """``max_batch_tokens`` for the resume key when it is not the default (so default keys stay what they were)."""
    value = OmegaConf.select(cfg, "max_batch_tokens", default=DEFAULT_MAX_BATCH_TOKENS)
    return {} if value == DEFAULT_MAX_BATCH_TOKENS else {"max_batch_tokens": value}


def build_method(name: str, cfg: DictConfig):
    """The method ``name`` with its conf/method settings; a method with a ``judge`` gets conf/judge's judge."""
    cls = method_class(name)
    params = OmegaConf.to_container(cfg.method, resolve=True)
    if "judge" in getattr(cls, "__dataclass_fields__", {}):
        params["judge"] = make_judge(HydraConfig.get().runtime.choices["judge"], OmegaConf.to_container(cfg.judge, resolve=True),
                                     cfg.cache_dir)
    return cls(**params)


def run_map(cfg: DictConfig, out_dir: Path, method_name: str) -> Path | None:
    """Build the objects ``cfg`` names and run one cell into ``out_dir`` (rank 0; other ranks write nothing)."""
    t0 = time.perf_counter()
    check_run_settings(batch_size=cfg.batch_size, seed=cfg.seed,
                       max_batch_tokens=OmegaConf.select(cfg, "max_batch_tokens", default=None))
    spec = ModelSpec.from_dict(OmegaConf.to_container(cfg.model, resolve=True))
    strategy = launched_strategy(json.dumps(strategy_config(cfg), sort_keys=True), cfg.device)
    rank0 = strategy.is_rank_zero
    prompt_set = load_prompt_set(cfg.domain.prompt_set)
    method = build_method(method_name, cfg)
    if getattr(method, "needs_items", True):  # a patching-only prompt set: say so before loading the model
        prompt_set.require_items(f"method={method_name}")
    templates = select_templates(prompt_set, cfg.templates)
    log.info("model=%s domain=%s method=%s device=%s %s cache=%s out=%s", spec.name, prompt_set.domain, method_name,
             cfg.device, strategy.describe(), cfg.cache_dir, out_dir if rank0 else "(rank 0 writes)")
    handle = cached_model(spec, strategy, cfg.cache_dir)
    labelings = OmegaConf.to_container(cfg.domain.labelings) if cfg.domain.labelings is not None else None
    writer = RunWriter(out_dir) if rank0 else None
    resume = OmegaConf.select(cfg, "resume", default=True)
    checkpoints = Checkpoints(Path(cfg.cache_dir) / "resume" / cell_key(cfg, method_name, templates, prompt_set.sha256)
                              if resume and rank0 else None)
    with getattr(method, "judge", None) or contextlib.nullcontext():  # a local judge keeps one server up for the run
        summary = run_cell(handle, prompt_set, method, writer, templates, labelings,
                           cfg.reduction, cfg.batch_size, Path(cfg.cache_dir) if cfg.use_activation_cache else None,
                           cfg.plots, strategy, checkpoints,
                           OmegaConf.select(cfg, "max_batch_tokens", default=DEFAULT_MAX_BATCH_TOKENS))
    if rank0:
        summary["config"] = OmegaConf.to_container(cfg, resolve=True)
        summary["timings"]["total_s"] = time.perf_counter() - t0
        writer.finish(summary)
        checkpoints.clear()  # the cell is written; its batches are no longer needed
        log.info("results: %s", out_dir)
    strategy.barrier()
    return out_dir if rank0 else None


def private_run_dir_for_other_ranks(argv: list[str]) -> list[str]:
    """On ranks other than 0: point Hydra's run/sweep folders at a private temporary folder, and write no
    Hydra files (``.hydra/``, the job log), so only rank 0 creates and writes the output folder."""
    rank, _ = launcher_rank()
    if rank == 0:
        return argv
    private = tempfile.mkdtemp(prefix=f"medinterp-rank{rank}-")
    atexit.register(shutil.rmtree, private, True)
    owned = ("hydra.run.dir=", "hydra.sweep.dir=", "hydra.output_subdir=", "hydra.job.name=", "hydra/job_logging=")
    kept = [a for a in argv if not a.lstrip("+").startswith(owned)]
    return kept + [f"hydra.run.dir={private}", f"hydra.sweep.dir={private}", "hydra.output_subdir=null",
                   "hydra/job_logging=stdout"]


@hydra.main(config_path="../conf", config_name="map", version_base="1.3")
@user_errors
def main(cfg: DictConfig) -> None:
    quiet_libraries()
    if launcher_rank()[0] != 0:
        logging.getLogger("medinterp").setLevel(logging.WARNING)  # one log: rank 0's
    choices = HydraConfig.get().runtime.choices
    out_dir = run_map(cfg, Path(HydraConfig.get().runtime.output_dir), choices["method"])
    if out_dir is not None:  # rank 0, results written: report.html, then W&B (conf/logger/)
        domain = prompt_set_domain(cfg.domain.prompt_set)  # the prompt set's own domain key, as the folder
        publish(out_dir, cfg, name=f"{choices['model']}-{domain}-{choices['method']}",
                job_type=choices["method"], group=sweep_group(), report="run")
        log_run_warnings(out_dir)  # last, so a degraded run (judge outage) ends its log saying so


if __name__ == "__main__":
    exit_cleanly_on_sigterm()
    user_errors(check_group_choices)(sys.argv[1:], ("model", "domain", "method", "judge", "strategy", "logger"))
    sys.argv[1:] = prompt_file_choices(sys.argv[1:])  # domain=<path to a .yaml>: a domain choice per file
    logging.getLogger("medinterp").setLevel(logging.INFO)
    sys.argv[1:] = private_run_dir_for_other_ranks(sys.argv[1:])
    main()
