"""The whole sweep-summary stage: a sweep folder → stability and robustness tables, figures, default map.

``summarize(sweep_dir, out_dir, params)`` reads every job (:mod:`medinterp.sweeps.jobs`), finds the varied
keys and the settings, and gets one knowledge map per setting and model:

- ``maps`` sweeps (runners/synthesize.py -m): each job's knowledge_map.json as written;
- ``methods`` sweeps (runners/map.py -m over seeds, templates, UMAP parameters, ...): the setting's
  per_layer tables synthesised with ``params`` (default: conf/synthesis/default.yaml), never rerunning a model.

It writes into ``out_dir`` (atomically; docs/sweeps.md):

    stability.csv  stability.json   fraction of settings selecting each layer (medinterp.sweeps.stability)
    robustness.csv robustness.json  best-layer spread and selection overlap (medinterp.sweeps.robustness)
    findings_stability.json         per model and finding: does its sign hold in every setting
                                    (medinterp.sweeps.findings_stability)
    settings.csv                    one line per setting: id, label, varied values, jobs, is_default
    stability_<model>.png  robustness_<model>.png
    default_map/<model>/knowledge_map.{json,png}   the map at the default parameters
    default_map/<model>/findings.json              its findings, each with ``stable`` across the settings

The *default map*: for a maps sweep, the job whose parameters equal ``params`` (else a fresh synthesis of
``runs`` with ``params``, when the tables are known); for a methods sweep, the setting whose varied
values equal the runner's defaults (``defaults(job)`` gives them), else the first setting, flagged
``is_default: false``.
"""
from __future__ import annotations

import csv
import json
import logging
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from medinterp.errors import MedinterpError
from medinterp.io import atomic_write, save_png, write_json
from medinterp.maps.findings import FindingsParams
from medinterp.maps.synthesis import MapParams, Table, build_map, load_table
from medinterp.results import read_config
from medinterp.sweeps import findings_stability as fstab
from medinterp.sweeps import robustness as rob
from medinterp.sweeps import stability as stab
from medinterp.sweeps.jobs import (DEFAULT_IGNORE, Job, Setting, canonical, find_jobs, flatten, settings_of, value_label,
                                   varied_keys)
from medinterp.sweeps.selection import selected_layers

log = logging.getLogger(__name__)
Defaults = Callable[[Job], Mapping[str, Any] | None]   # a job → the runner's default config (flattened), or None


# -- one map per setting -----------------------------------------------------------------------------
def setting_maps(kind: str, settings: Sequence[Setting], params: MapParams) -> list[tuple[Setting, dict[str, dict]]]:
    """(setting, {model: knowledge map}) for every setting (see the module docstring)."""
    out = []
    for setting in tqdm(settings, desc="maps per setting", unit="setting", disable=len(settings) < 5):
        maps: dict[str, dict] = {}
        if kind == "maps":
            for job in setting.jobs:
                maps.update({model: json.loads(path.read_text()) for model, path in job.maps.items()})
        else:
            pairs = [(r, f"{job.name}/per_layer.csv") for job in setting.jobs for r in job.rows]
            table = Table(tuple(r for r, _ in pairs), tuple(s for _, s in pairs))
            maps = {model: build_map(table.of(model), params) for model in table.models()}
        out.append((setting, maps))
    return out


# -- the default map ---------------------------------------------------------------------------------
def _runs_of(jobs: Sequence[Job]) -> list[str] | None:
    """The ``runs`` a synthesize job read, from its config (:func:`medinterp.results.read_config`; a synthesize
    job has Hydra's .hydra/config.yaml when the sweep kept it)."""
    for job in jobs:
        runs = (read_config(job.path) or {}).get("runs")
        if runs:
            return [runs] if isinstance(runs, str) else list(runs)
    return None


def default_maps(kind: str, maps: Sequence[tuple[Setting, dict[str, dict]]], params: MapParams,
                 defaults: Defaults | None, runs: Sequence[str] | None) -> tuple[dict[str, dict], dict[str, Any]]:
    """({model: map} at the default parameters, {"setting", "is_default", "source"}) — see the module docstring."""
    if kind == "maps":
        wanted = {k: canonical(v) for k, v in flatten(params.as_dict()).items()}
        for setting, by_model in maps:
            if all({k: canonical(v) for k, v in job.config.items()} == wanted for job in setting.jobs):
                return by_model, {"setting": setting.id, "is_default": True, "source": f"job {setting.jobs[0].name}"}
        runs = list(runs) if runs else _runs_of([j for s, _ in maps for j in s.jobs])
        if not runs:
            return {}, {"setting": None, "is_default": False,
                        "source": "no job ran at the default parameters and the tables are unknown (pass runs=)"}
        table = load_table(runs)
        return ({m: build_map(table.of(m), params) for m in table.models()},
                {"setting": None, "is_default": True, "source": f"fresh synthesis of {', '.join(map(str, runs))}"})
    for setting, by_model in maps:
        if defaults is not None and all(_at_defaults(job, setting, defaults) for job in setting.jobs):
            return by_model, {"setting": setting.id, "is_default": True, "source": f"setting {setting.label}"}
    setting, by_model = maps[0]
    return by_model, {"setting": setting.id, "is_default": False,
                      "source": f"no setting ran at the runner's defaults; showing the first ({setting.label})"}


def _at_defaults(job: Job, setting: Setting, defaults: Defaults) -> bool:
    base = defaults(job)
    if base is None:
        return False
    return all(canonical(job.config.get(k)) == canonical(base.get(k)) for k in setting.values if k != "replicate")


# -- writing -----------------------------------------------------------------------------------------
def _write_csv(path: Path, columns: Sequence[str], rows: Iterable[Mapping[str, Any]]) -> Path:
    def write(f):
        w = csv.DictWriter(f, fieldnames=list(columns))
        w.writeheader()
        for r in rows:
            w.writerow({c: r[c] for c in columns})
    return atomic_write(path, write, newline="")


def summarize(sweep_dir: str | Path, out_dir: str | Path, params: MapParams | None = None, *, kind: str = "auto",
              ignore: Sequence[str] = DEFAULT_IGNORE, defaults: Defaults | None = None,
              runs: Sequence[str] | None = None, figures: bool = True, source: str | None = None,
              findings_params: FindingsParams | None = None) -> dict[str, Any]:
    """Summarise the sweep in ``sweep_dir`` into ``out_dir``; returns what summary.json should hold."""
    params = params or MapParams()
    out = Path(out_dir)
    kind, jobs = find_jobs(sweep_dir, kind)
    keys = varied_keys(jobs, ignore)
    settings = settings_of(jobs, keys)
    log.info("sweep %s: %d %s jobs, %d settings; varied: %s", source or sweep_dir, len(jobs), kind, len(settings),
             ", ".join(keys) or "nothing")
    maps = setting_maps(kind, settings, params)
    if not any(by_model for _, by_model in maps):
        raise MedinterpError(f"the jobs under {str(sweep_dir)!r} have no rows")
    s_rows = stab.stability(maps)
    r_rows = rob.robustness(maps)
    default, default_info = default_maps(kind, maps, params, defaults, runs)
    per_setting = fstab.setting_findings(kind, settings, maps, findings_params)
    f_table = fstab.stability(per_setting)

    files = [_write_csv(out / "stability.csv", stab.COLUMNS, stab.as_dicts(s_rows)),
             _write_csv(out / "robustness.csv", rob.COLUMNS, [rob.as_csv_cells(r) for r in r_rows])]
    setting_lines = [{"id": s.id, "label": s.label, **{k: value_label(v) for k, v in s.values.items()},
                      "jobs": ";".join(j.name for j in s.jobs), "is_default": s.id == default_info["setting"]}
                     for s in settings]
    files.append(_write_csv(out / "settings.csv", ["id", "label", *settings[0].values, "jobs", "is_default"],
                            setting_lines))
    head = {"sweep": source or str(sweep_dir), "kind": kind, "n_jobs": len(jobs), "varied_keys": keys,
            "settings": [{"id": s.id, "label": s.label, "values": dict(s.values), "jobs": [j.name for j in s.jobs]}
                         for s in settings],
            "default_map": default_info, "map_params": params.as_dict()}
    files.append(write_json(out / "stability.json", {**head, "stability": stab.as_json(s_rows)}))
    files.append(write_json(out / "robustness.json", {**head, "robustness": rob.as_dicts(r_rows)}))
    files.append(write_json(out / "findings_stability.json", {**head, "findings_stability": f_table}))
    default_found = next((by_model for s, by_model in per_setting if s.id == default_info["setting"]), {})
    for model, kmap in default.items():
        files.append(write_json(out / "default_map" / model / "knowledge_map.json", kmap))
        if model in default_found:
            files.append(write_json(out / "default_map" / model / "findings.json",
                                    fstab.with_stability(default_found[model], f_table.get(model, {}))))
    outline = "the map at the default parameters" if default_info["is_default"] else "the first setting's map"
    figs = _figures(out, s_rows, r_rows, default, outline) if figures else []
    return {**head, "files": [p.relative_to(out).as_posix() for p in files + figs], "figures": [p.name for p in figs],
            "n_stability_rows": len(s_rows), "n_robustness_rows": len(r_rows),
            "findings_stability": fstab.brief(f_table)}


def _figures(out: Path, s_rows, r_rows, default: Mapping[str, dict], outline: str) -> list[Path]:
    from medinterp.maps.plot import knowledge_map_figure
    from medinterp.sweeps.plot import robustness_figure, stability_figure

    paths = []
    for model in sorted({r.model for r in s_rows}):
        rows = [r for r in s_rows if r.model == model and r.group_by == "all"]
        chosen = selected_layers(default[model]) if model in default else None
        n = max((r.n_settings for r in rows), default=0)
        title = f"Stability map: {model}, {n} settings (outlined: {outline})"
        paths.append(save_png(stability_figure(model, rows, chosen, title), out / f"stability_{model}.png"))
        rows_r = [r for r in r_rows if r.model == model and r.group_by == "all"]
        paths.append(save_png(robustness_figure(model, rows_r), out / f"robustness_{model}.png"))
        if model in default:
            paths.append(save_png(knowledge_map_figure(default[model]), out / "default_map" / model / "knowledge_map.png"))
    return paths
