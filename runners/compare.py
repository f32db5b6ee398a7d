"""Compare models: Table 1, the atlas figure and cross-model agreement from stored results (seconds; no model run).

    python runners/compare.py runs=[outputs/atlas/gemma3_270m,outputs/atlas/smollm2_135m]
    python runners/compare.py runs=outputs/multirun/<folder with several models> map.sigma=2.0
    python runners/compare.py runs=[...] "table1.extra=[age:umap:anisotropy:age/pooled]"

Writes <out_dir>/{table1.csv,table1.md,agreement.json,atlas.png,report.html} (out_dir defaults to
outputs/compare/<time>; a multirun writes one <out_dir>/<job number>/ per job). Map parameters:
conf/synthesis/default.yaml (map.*). Returns the mean pairwise consensus Jaccard (for sweepers). docs/atlas.md.
"""
from __future__ import annotations

import logging
import sys
from pathlib import Path

from _common import check_group_choices, log, map_settings, publish, sweep_group, user_errors

import hydra  # noqa: E402
from hydra.core.hydra_config import HydraConfig  # noqa: E402
from omegaconf import DictConfig, OmegaConf  # noqa: E402

from medinterp.atlas import Comparison, compare, concepts_from  # noqa: E402
from medinterp.errors import MedinterpError  # noqa: E402
from medinterp.maps.synthesis import params_from_config  # noqa: E402


def run_compare(cfg: DictConfig, out: Path) -> Comparison:
    """Compare every model under ``cfg.runs`` into ``out`` (files listed in the module docstring, report aside)."""
    if cfg.runs is None:
        raise MedinterpError("runs= is required: folders of maps or multiruns, e.g. runs=[outputs/a,outputs/b]")
    runs = list(map(str, cfg.runs)) if OmegaConf.is_list(cfg.runs) else [str(cfg.runs)]
    params, findings_params = params_from_config(map_settings(cfg))
    extra = OmegaConf.to_container(cfg.table1.extra, resolve=True) if cfg.table1.extra else []
    result = compare(runs, out, params, findings_params, concepts_from(extra, bool(cfg.table1.paper)),
                     int(cfg.grid_points), figures=bool(cfg.plots))
    log.info("compared %s: %s", ", ".join(result.models), out)
    return result


@hydra.main(config_path="../conf", config_name="compare", version_base="1.3")
@user_errors
def main(cfg: DictConfig) -> float:
    hc = HydraConfig.get()
    result = run_compare(cfg, Path(hc.runtime.output_dir))
    name = "atlas-" + "-".join(result.models) + (f"-{hc.job.num}" if sweep_group() else "")
    publish(result.out_dir, cfg, name=name, job_type="comparison", group=sweep_group(),
            report="atlas" if cfg.report else None)
    return result.score


if __name__ == "__main__":
    user_errors(check_group_choices)(sys.argv[1:], ("synthesis", "logger"))
    logging.getLogger("medinterp").setLevel(logging.INFO)
    main()
