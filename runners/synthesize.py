"""Knowledge maps and findings from earlier runs' per_layer.csv tables (seconds; never reruns a model).

    python runners/synthesize.py runs=outputs/multirun/2025-01-01_12-00-00
    python runners/synthesize.py runs=[outputs/a,outputs/b/per_layer.csv] map.sigma=2.0 out_dir=outputs/maps

Writes <out_dir>/<model>/{knowledge_map.json,knowledge_map.png,findings.json,findings.png} for every model
found (out_dir defaults to outputs/synthesize/<time>). Parameters: conf/map/default.yaml.
"""
from __future__ import annotations

import logging
import sys
from pathlib import Path

from _common import check_group_choices, log, user_errors

import hydra  # noqa: E402
from omegaconf import DictConfig, OmegaConf  # noqa: E402

from medinterp.errors import MedinterpError  # noqa: E402
from medinterp.maps.synthesis import params_from_config, synthesize  # noqa: E402


def run_synthesis(cfg: DictConfig) -> list[Path]:
    """Build the parameters ``cfg`` names and synthesise every model under ``cfg.runs``."""
    if cfg.runs is None:
        raise MedinterpError("runs= is required: a run folder, a per_layer.csv, or a list of them")
    runs = OmegaConf.to_container(cfg.runs) if OmegaConf.is_list(cfg.runs) else str(cfg.runs)
    params, findings_params = params_from_config(OmegaConf.to_container(cfg.map, resolve=True))
    out = Path(cfg.out_dir)
    folders = synthesize(runs, out, params, findings_params)
    for folder in folders:
        log.info("model %s: %s", folder.name, folder)
    log.info("knowledge maps: %s", out)
    return folders


@hydra.main(config_path="../conf", config_name="synthesize", version_base="1.3")
@user_errors
def main(cfg: DictConfig) -> None:
    run_synthesis(cfg)


if __name__ == "__main__":
    user_errors(check_group_choices)(sys.argv[1:], ("map",))
    logging.getLogger("medinterp").setLevel(logging.INFO)
    main()
