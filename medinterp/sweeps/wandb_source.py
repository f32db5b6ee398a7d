"""A W&B sweep → a local sweep folder that :func:`medinterp.sweeps.summary.summarize` reads like a multirun.

Works through any object with the ``wandb.Api`` interface used here (tests pass a fake; no network):

    api.sweep("<entity>/<project>/<sweep id>").runs → runs with .id, .state, .config,
    run.logged_artifacts() → artifacts with .type and .download(root=...),
    run.files() → files with .name and .download(root=..., replace=True)

For every *finished* run, the run's ``results`` artifact (what medinterp.tracking logs: the run folder's
files) is downloaded into ``<dest>/<run id>/``; a run without one falls back to its uploaded files named
``per_layer.csv``, ``summary.json``, ``config.json`` or ``knowledge_map.json``. A knowledge map found at the
top of a run folder is moved into ``<run id>/<model>/`` (the synthesize layout); a run folder with a
per_layer table but no summary.json gets one naming the W&B run, and a config.json holding the run's W&B
config, so its settings are known.
"""
from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path
from typing import Any

from medinterp.errors import MedinterpError
from medinterp.io import write_json
from medinterp.secrets import redact

log = logging.getLogger(__name__)
RESULT_FILES = ("per_layer.csv", "summary.json", "config.json", "knowledge_map.json")


def sweep_path(sweep: str, entity: str | None = None, project: str | None = None) -> str:
    """``entity/project/id`` from a full path, ``project/id``, or a bare id plus ``entity``/``project``."""
    parts = [p for p in sweep.split("/") if p]
    if len(parts) == 3:
        return "/".join(parts)
    if len(parts) == 2:
        return "/".join([entity, *parts]) if entity else "/".join(parts)
    if len(parts) == 1 and project:
        return "/".join(p for p in (entity, project, parts[0]) if p)
    raise MedinterpError(f"sweep={sweep!r}: give a folder, <entity>/<project>/<sweep id>, or a sweep id with wandb.project set")


def _download(run: Any, folder: Path, artifact_type: str) -> bool:
    """Fetch the run's results into ``folder``; True when a table or map arrived."""
    for artifact in run.logged_artifacts():
        if getattr(artifact, "type", None) == artifact_type:
            artifact.download(root=str(folder))
    if not _has_results(folder):
        for f in run.files():
            if Path(f.name).name in RESULT_FILES:
                f.download(root=str(folder), replace=True)
    return _has_results(folder)


def _has_results(folder: Path) -> bool:
    return any(any(folder.rglob(name)) for name in ("per_layer.csv", "knowledge_map.json"))


def _arrange(run: Any, folder: Path) -> None:
    top = folder / "knowledge_map.json"
    if top.exists():  # a synthesis folder logged flat: put it where find_jobs looks (<job>/<model>/)
        model = json.loads(top.read_text())["model"]
        (folder / model).mkdir(exist_ok=True)
        for name in ("knowledge_map.json", "knowledge_map.png", "findings.json", "findings.png"):
            if (folder / name).exists():
                shutil.move(str(folder / name), str(folder / model / name))
    for table in folder.rglob("per_layer.csv"):
        if not (table.parent / "summary.json").exists():
            write_json(table.parent / "summary.json", {"wandb_run": run.id})
            if not (table.parent / "config.json").exists():
                write_json(table.parent / "config.json", redact(dict(run.config)))


def fetch_sweep(api: Any, path: str, dest: str | Path, artifact_type: str = "results") -> Path:
    """Download every finished run of the sweep ``path`` into ``dest/<run id>/``; returns ``dest``."""
    dest = Path(dest)
    try:
        sweep = api.sweep(path)
        runs = list(sweep.runs)
    except Exception as err:  # wandb raises its own types (CommError, ValueError) for unknown sweeps
        raise MedinterpError(f"W&B sweep {path!r}: {type(err).__name__}: {err}") from None
    fetched = 0
    for run in runs:
        state = getattr(run, "state", "finished")
        if state != "finished":
            log.info("W&B run %s is %s: skipped", run.id, state)
            continue
        folder = dest / run.id
        folder.mkdir(parents=True, exist_ok=True)
        if not _download(run, folder, artifact_type):
            log.warning("W&B run %s has no %r artifact and no per_layer.csv / knowledge_map.json file: skipped",
                        run.id, artifact_type)
            shutil.rmtree(folder)
            continue
        _arrange(run, folder)
        fetched += 1
    if not fetched:
        raise MedinterpError(f"W&B sweep {path!r}: none of its {len(runs)} runs is finished with results to read")
    log.info("W&B sweep %s: %d of %d runs fetched into %s", path, fetched, len(runs), dest)
    return dest
