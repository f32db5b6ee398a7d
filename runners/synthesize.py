"""Knowledge maps and findings from earlier runs' per_layer.csv tables (seconds; never reruns a model).

    python runners/synthesize.py runs=outputs/multirun/2025-01-01_12-00-00
    python runners/synthesize.py runs=[outputs/a,outputs/b/per_layer.csv] map.sigma=2.0 out_dir=outputs/maps
    python runners/synthesize.py -m runs=outputs/multirun/... map.sigma=0.5,1,2 plots=false findings=false

Writes <out_dir>/<model>/{knowledge_map.json,knowledge_map.png,findings.json,findings.png} for every model
found (out_dir defaults to outputs/synthesize/<time>); a multirun writes one <out_dir>/<job number>/ per job
(docs/sweeps.md). Parameters: conf/synthesis/default.yaml. Returns the map's method agreement (for sweepers).
"""
from __future__ import annotations

import functools
import logging
import sys
from pathlib import Path

from _common import check_group_choices, log, map_settings, publish, sweep_group, user_errors

import hydra  # noqa: E402
from hydra.core.hydra_config import HydraConfig  # noqa: E402
from omegaconf import DictConfig, OmegaConf  # noqa: E402

from medinterp.errors import MedinterpError  # noqa: E402
from medinterp.maps.synthesis import Table, load_table, params_from_config, synthesize  # noqa: E402
from medinterp.sweeps.objective import folders_agreement  # noqa: E402


@functools.lru_cache(maxsize=4)  # a multirun over map parameters reads the same tables in every job
def cached_table(runs: tuple[str, ...]) -> Table:
    return load_table(list(runs))


def run_synthesis(cfg: DictConfig, out: Path) -> list[Path]:
    """Build the parameters ``cfg`` names and synthesise every model under ``cfg.runs`` into ``out``."""
    if cfg.runs is None:
        raise MedinterpError("runs= is required: a run folder, a per_layer.csv, or a list of them")
    runs = tuple(map(str, cfg.runs)) if OmegaConf.is_list(cfg.runs) else (str(cfg.runs),)
    params, findings_params = params_from_config(map_settings(cfg))
    folders = synthesize(list(runs), out, params, findings_params, figures=cfg.plots, with_findings=cfg.findings,
                         table=cached_table(runs))
    for folder in folders:
        log.info("model %s: %s", folder.name, folder)
    log.info("knowledge maps: %s", out)
    return folders


@hydra.main(config_path="../conf", config_name="synthesize", version_base="1.3")
@user_errors
def main(cfg: DictConfig) -> float:
    hc = HydraConfig.get()
    folders = run_synthesis(cfg, Path(hc.runtime.output_dir))  # = out_dir, or its job folder in -m
    group = sweep_group()
    if group is None:  # a single synthesis joins the W&B group of the multirun whose cells it maps
        runs = list(map(str, cfg.runs)) if OmegaConf.is_list(cfg.runs) else [str(cfg.runs)]
        group = Path(runs[0]).name if len(runs) == 1 else None
    for folder in folders:
        publish(folder, cfg, name=f"{folder.name}-synthesis" + (f"-{hc.job.num}" if sweep_group() else ""),
                job_type="synthesis", group=group, report="map" if cfg.plots else None)
    return folders_agreement(folders)


if __name__ == "__main__":
    user_errors(check_group_choices)(sys.argv[1:], ("synthesis", "logger"))
    logging.getLogger("medinterp").setLevel(logging.INFO)
    main()
