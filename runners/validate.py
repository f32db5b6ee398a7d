"""Validity of a knowledge map: interventions at the map's layers vs depth-matched random layers (issue 11).

    python runners/validate.py map=outputs/map/<run> domain=drugs intervention=ablation
    python runners/validate.py -m map=<run> domain=age,drugs intervention=ablation,steer
    torchrun --nproc_per_node=8 runners/validate.py strategy=zero3 model=<large> map=<run> domain=drugs

Writes validity.json (per lane: blocks, effect with CI, random draws, baselines, validity score, damage),
validity.png, config.json, report.html and W&B (conf/logger/). docs/validity.md.
"""
from __future__ import annotations

import json
import logging
import sys
from pathlib import Path

from _common import (cached_model, check_group_choices, exit_cleanly_on_sigterm, launched_strategy, log,
                     private_run_dir_for_other_ranks, publish, quiet_libraries, sweep_group, user_errors)

import hydra  # noqa: E402
from hydra.core.hydra_config import HydraConfig  # noqa: E402
from omegaconf import DictConfig, OmegaConf  # noqa: E402

from medinterp.errors import MedinterpError, unknown_choice  # noqa: E402
from medinterp.io import save_png, write_json  # noqa: E402
from medinterp.models import ModelSpec  # noqa: E402
from medinterp.validity.lanes import domain_entry  # noqa: E402
from medinterp.validity.lora import LoraBudget  # noqa: E402
from medinterp.validity.plot import validity_figure  # noqa: E402
from medinterp.validity.probe import probe_spec  # noqa: E402
from medinterp.validity.validate import INTERVENTIONS, ValidateSettings, validate  # noqa: E402

STRATEGIES = ("single", "device_map", "zero3")  # zero3: every rank runs the same probes (replicated), rank 0 writes


def read_map(path: str, model: str) -> dict:
    """knowledge_map.json at ``path``, or inside it (``synthesis/<model>/`` or the folder itself)."""
    p = Path(path).expanduser().absolute()
    for candidate in (p, p / "knowledge_map.json", p / model / "knowledge_map.json",
                      p / "synthesis" / model / "knowledge_map.json"):
        if candidate.is_file():
            try:
                return json.loads(candidate.read_text())
            except ValueError as err:
                raise MedinterpError(f"map={path}: {candidate} is not valid JSON ({err})") from None
    raise MedinterpError(f"map={path}: no knowledge_map.json there (looked in the folder, <folder>/{model}/ and "
                         f"<folder>/synthesis/{model}/); run runners/synthesize.py on a map first")


def settings_of(cfg: DictConfig) -> ValidateSettings:
    plain = OmegaConf.to_container(cfg, resolve=True)
    return ValidateSettings(n_draws=plain["n_draws"], n_bands=plain["n_bands"], seed=plain["seed"],
                            max_items=plain["max_items"], alphas=tuple(plain["alphas"] or ()),
                            lanes=None if plain["lanes"] is None else tuple(plain["lanes"]),
                            n_boot=plain["n_boot"], batch_size=plain["batch_size"], lora=LoraBudget(**plain["lora"]))


def run_validate(cfg: DictConfig, out_dir: Path) -> Path | None:
    """Validate the map ``cfg.map`` for ``cfg.domain`` under ``cfg.intervention`` into ``out_dir`` (rank 0 writes
    and returns it; under zero3 the other ranks run the same forwards, which gather the weights, and return None)."""
    settings = settings_of(cfg)  # bad input costs nothing: settings, probe and map are checked before the model loads
    if cfg.intervention not in INTERVENTIONS:
        raise unknown_choice("intervention", cfg.intervention, INTERVENTIONS)
    domain = cfg.domain.prompt_set
    probe_spec(domain)  # a domain without a probe
    kmap = read_map(cfg.map, cfg.model.name)
    domain_entry(kmap, domain, cfg.model.name, OmegaConf.select(cfg, "model.n_layers", default=None))
    strategy_cfg = OmegaConf.to_container(cfg.strategy, resolve=True)
    name = strategy_cfg.get("name", "single")
    if name not in STRATEGIES:
        raise MedinterpError(f"strategy={name}: not for validity runs; use strategy={' or strategy='.join(STRATEGIES)}")
    if name == "zero3" and cfg.intervention == "lora":
        raise MedinterpError("strategy=zero3: intervention=lora trains adapters in one process; use strategy=single "
                             "or strategy=device_map")
    strategy = launched_strategy(json.dumps(strategy_cfg, sort_keys=True), cfg.device)
    rank0 = strategy.is_rank_zero
    log.info("model=%s domain=%s intervention=%s map=%s device=%s out=%s", cfg.model.name, domain,
             cfg.intervention, cfg.map, cfg.device, out_dir)
    handle = cached_model(ModelSpec.from_dict(OmegaConf.to_container(cfg.model, resolve=True)), strategy, cfg.cache_dir)
    damage = None if cfg.damage is None else list(cfg.damage)
    result = validate(handle, kmap, domain, cfg.intervention, settings, damage)
    strategy.barrier()
    if not rank0:
        return None
    out_dir.mkdir(parents=True, exist_ok=True)
    write_json(out_dir / "validity.json", result)
    save_png(validity_figure(result), out_dir / "validity.png")
    write_json(out_dir / "config.json", OmegaConf.to_container(cfg, resolve=True))
    return out_dir


@hydra.main(config_path="../conf", config_name="validate", version_base="1.3")
@user_errors
def main(cfg: DictConfig) -> None:
    quiet_libraries()
    out_dir = run_validate(cfg, Path(HydraConfig.get().runtime.output_dir))
    if out_dir is not None:  # rank 0
        model = HydraConfig.get().runtime.choices["model"]
        publish(out_dir, cfg, name=f"{model}-{cfg.domain.prompt_set}-validity-{cfg.intervention}", job_type="validity",
                group=sweep_group(), report="validity")
        log.info("results: %s", out_dir)


if __name__ == "__main__":
    exit_cleanly_on_sigterm()
    user_errors(check_group_choices)(sys.argv[1:], ("model", "domain", "strategy", "logger"))
    sys.argv[1:] = private_run_dir_for_other_ranks(sys.argv[1:])
    logging.getLogger("medinterp").setLevel(logging.INFO)
    main()
