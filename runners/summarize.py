"""A sweep's runs → its stability map, robustness report and the map at the default parameters.

    python runners/summarize.py sweep=outputs/multirun/2025-01-01_12-00-00
    python runners/summarize.py sweep=outputs/synth-sweep out_dir=outputs/summary map.min_methods=3
    python runners/summarize.py sweep=my-team/medinterp/abc123xy          # a W&B sweep (needs wandb, online)

Reads every job of the sweep (never reruns a model) and writes stability.{csv,json}, robustness.{csv,json},
findings_stability.json, settings.csv, stability_<model>.png, robustness_<model>.png and default_map/<model>/ into out_dir
(default outputs/summarize/<time>), then logs the folder to W&B as a run of job_type "summary".
docs/sweeps.md describes every file.
"""
from __future__ import annotations

import functools
import logging
import sys
import time
from pathlib import Path

from _common import CONF, check_group_choices, log, map_settings, publish, user_errors

import hydra  # noqa: E402
from omegaconf import DictConfig, OmegaConf  # noqa: E402

from medinterp.errors import MedinterpError  # noqa: E402
from medinterp.io import write_json  # noqa: E402
from medinterp.maps.synthesis import params_from_config  # noqa: E402
from medinterp.provenance import SUMMARY_PACKAGES, versions  # noqa: E402
from medinterp.sweeps.jobs import Job, flatten, job_choices  # noqa: E402
from medinterp.sweeps.summary import summarize  # noqa: E402
from medinterp.sweeps.wandb_source import fetch_sweep, sweep_path  # noqa: E402

CELL_GROUPS = ("model", "domain", "method", "judge")   # what a method run's defaults depend on


@functools.lru_cache(maxsize=64)
def composed_defaults(choices: tuple[tuple[str, str], ...]) -> dict:
    """conf/map.yaml composed with only these group choices: the runner's defaults for that cell, flattened."""
    cfg = hydra.compose("map", overrides=[f"{g}={c}" for g, c in choices])
    return flatten(OmegaConf.to_container(cfg, resolve=True))


def runner_defaults(job: Job) -> dict | None:
    """The map runner's default configuration for ``job``'s cell (None when its choices are not known here)."""
    choices = job_choices(job)
    picked = tuple((g, choices[g]) for g in CELL_GROUPS if choices.get(g) and (CONF / g / f"{choices[g]}.yaml").exists())
    return composed_defaults(picked) if len(picked) >= 3 else None


def sweep_folder(cfg: DictConfig, out: Path) -> tuple[Path, str]:
    """(local folder of the sweep's jobs, how to name the sweep): the folder itself, or a W&B sweep fetched."""
    if cfg.sweep is None:
        raise MedinterpError("sweep= is required: a multirun folder, or a W&B sweep <entity>/<project>/<id>")
    local = Path(str(cfg.sweep))
    if local.exists() or str(cfg.sweep).startswith(("/", ".", "~")):  # W&B paths never start so: a missing folder
        return local, str(local)
    path = sweep_path(str(cfg.sweep), cfg.wandb.entity, cfg.wandb.project)
    try:
        import wandb

        api = wandb.Api()
    except ImportError:
        raise MedinterpError(f"sweep={cfg.sweep!r} is not a folder; reading a W&B sweep needs wandb "
                             "(pip install wandb)") from None
    except Exception as err:  # no API key, no network: wandb's own error types
        raise MedinterpError(f"sweep={cfg.sweep!r} is not a folder, and W&B cannot be read: "
                             f"{type(err).__name__}: {err}") from None
    return fetch_sweep(api, path, out / "wandb_sweep", cfg.wandb.artifact_type), path


@hydra.main(config_path="../conf", config_name="summarize", version_base="1.3")
@user_errors
def main(cfg: DictConfig) -> None:
    t0 = time.perf_counter()
    out = Path(cfg.out_dir)
    folder, name = sweep_folder(cfg, out)
    params, findings_params = params_from_config(map_settings(cfg))
    summary = summarize(folder, out, params, kind=cfg.kind, ignore=list(cfg.ignore), defaults=runner_defaults,
                        runs=list(cfg.runs) if OmegaConf.is_list(cfg.runs) else ([str(cfg.runs)] if cfg.runs else None),
                        figures=cfg.plots, source=name, findings_params=findings_params)
    summary.update(config=OmegaConf.to_container(cfg, resolve=True), versions=versions(SUMMARY_PACKAGES),
                   timings={"total_s": time.perf_counter() - t0})
    write_json(out / "summary.json", summary)
    log.info("sweep %s: %d settings (%s); default map: %s", name, len(summary["settings"]),
             ", ".join(summary["varied_keys"]) or "nothing varied", summary["default_map"]["source"])
    log.info("sweep summary: %s", out)
    publish(out, cfg, name=f"summary-{Path(name).name}", job_type="summary", group=Path(name).name, report="summary")


if __name__ == "__main__":
    user_errors(check_group_choices)(sys.argv[1:], tuple(g for g in ("synthesis", "logger") if (CONF / g).is_dir()))
    logging.getLogger("medinterp").setLevel(logging.INFO)
    main()
