"""Map one (model, domain, method) cell, or a Hydra multirun of cells.

    python runners/map.py model=smollm2_135m domain=drugs method=umap
    python runners/map.py -m domain=age,drugs model=gemma3_270m,smollm2_135m

Writes per_layer.csv, summary.json and figures into the Hydra run folder (printed at the end).
"""
from __future__ import annotations

import contextlib
import functools
import logging
import sys
import time
from pathlib import Path

from _common import check_group_choices, exit_cleanly_on_sigterm, log, quiet_libraries, user_errors

import hydra  # noqa: E402
from hydra.core.hydra_config import HydraConfig  # noqa: E402
from omegaconf import DictConfig, OmegaConf  # noqa: E402

from medinterp.judges import make_judge  # noqa: E402
from medinterp.methods import method_class, select_templates  # noqa: E402
from medinterp.models import ModelSpec, load_model  # noqa: E402
from medinterp.pipeline import run_cell  # noqa: E402
from medinterp.prompts import load_prompt_set  # noqa: E402
from medinterp.results import RunWriter  # noqa: E402


@functools.lru_cache(maxsize=1)  # a multirun over domains loads the model once
def cached_model(spec: ModelSpec, device: str, cache_dir: str):
    return load_model(spec, device, Path(cache_dir))


def build_method(name: str, cfg: DictConfig):
    """The method ``name`` with its conf/method settings; a method with a ``judge`` gets conf/judge's judge."""
    cls = method_class(name)
    params = OmegaConf.to_container(cfg.method, resolve=True)
    if "judge" in getattr(cls, "__dataclass_fields__", {}):
        params["judge"] = make_judge(HydraConfig.get().runtime.choices["judge"], OmegaConf.to_container(cfg.judge, resolve=True),
                                     cfg.cache_dir)
    return cls(**params)


def run_map(cfg: DictConfig, out_dir: Path, method_name: str) -> Path:
    """Build the objects ``cfg`` names and run one cell into ``out_dir``."""
    t0 = time.perf_counter()
    spec = ModelSpec.from_dict(OmegaConf.to_container(cfg.model, resolve=True))
    prompt_set = load_prompt_set(cfg.domain.prompt_set)
    method = build_method(method_name, cfg)
    log.info("model=%s domain=%s method=%s device=%s cache=%s out=%s", spec.name, prompt_set.domain, method_name,
             cfg.device, cfg.cache_dir, out_dir)
    handle = cached_model(spec, cfg.device, cfg.cache_dir)
    labelings = OmegaConf.to_container(cfg.domain.labelings) if cfg.domain.labelings is not None else None
    writer = RunWriter(out_dir)
    with getattr(method, "judge", None) or contextlib.nullcontext():  # a local judge keeps one server up for the run
        summary = run_cell(handle, prompt_set, method, writer, select_templates(prompt_set, cfg.templates), labelings,
                           cfg.reduction, cfg.batch_size, Path(cfg.cache_dir) if cfg.use_activation_cache else None,
                           cfg.plots)
    summary["config"] = OmegaConf.to_container(cfg, resolve=True)
    summary["timings"]["total_s"] = time.perf_counter() - t0
    writer.finish(summary)
    log.info("results: %s", out_dir)
    return out_dir


@hydra.main(config_path="../conf", config_name="map", version_base="1.3")
@user_errors
def main(cfg: DictConfig) -> None:
    quiet_libraries()
    run_map(cfg, Path(HydraConfig.get().runtime.output_dir), HydraConfig.get().runtime.choices["method"])


if __name__ == "__main__":
    exit_cleanly_on_sigterm()
    user_errors(check_group_choices)(sys.argv[1:], ("model", "domain", "method", "judge"))
    logging.getLogger("medinterp").setLevel(logging.INFO)
    main()
