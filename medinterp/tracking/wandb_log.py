"""Log a finished results folder to Weights & Biases, after the fact and never at the results' expense.

    from medinterp.tracking import log_run_folder
    log_run_folder(out_dir, settings={"name": "wandb"}, config=cfg_dict,
                   name="gemma3_270m-drugs-umap", group="2025-01-01_12-00-00", job_type="umap")

The runner writes per_layer.csv, summary.json and figures atomically first; this reads the folder
(:func:`medinterp.tracking.folder.read_folder`) and replays it into one W&B run:

1. ``wandb.init`` with the resolved config minus secrets (plus ``provenance``: prompt-set key and hash,
   model key, versions), ``name``/``group``/``job_type``/``tags``;
2. ``define_metric("layer")`` and ``define_metric("<method>/*", step_metric="layer")``, then one
   ``log`` per layer, so every metric is a curve over layers;
3. one ``log`` with the ``wandb.Table``s and ``wandb.Image``s; the run summary (best layers, baselines,
   timings); the ``prompt-set`` and ``results`` artifacts;
4. ``finish``; then ``<folder>/wandb_logged.json`` records what was logged (our own readable copy: the
   offline ``.wandb`` log is binary).

Every failure (wandb missing, no network, a bad key, an init timeout, a W&B bug) becomes one warning
line and ``None``: the local results are complete before this starts and are never modified. An
online init that fails falls back to offline (``offline_fallback``), for the rest of the process too.
The W&B service process started
by the first call is reused by later calls in the same process (a multirun), so a run costs well under
a second; system metrics, console capture and code saving are off (the run replays finished files).
"""
from __future__ import annotations

import logging
import os
import sys
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from medinterp.io import write_json
from medinterp.tracking.folder import RECORD_NAME, STEP_METRIC, Payload, read_folder
from medinterp.secrets import argv_has_secret, redact, scrub
from medinterp.tracking.settings import TrackerSettings, resolve_mode

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrackedRun:
    """What :func:`log_run_folder` logged: the W&B run and our local record of it."""

    name: str
    group: str | None
    job_type: str
    mode: str                  # online | offline
    run_id: str
    url: str | None            # online runs only
    wandb_dir: Path | None     # the run's local folder (offline: what ``wandb sync`` uploads)
    record: Path               # <folder>/wandb_logged.json
    seconds: float


def _wandb_settings(wandb: Any, settings: TrackerSettings) -> Any:
    """W&B settings for replaying finished files: nothing sampled, captured or copied while we log."""
    return wandb.Settings(
        silent=True,                # our own log line says where the run is; no W&B banner per run
        console="off",              # the run's own log is in the results folder
        x_disable_stats=True,       # system metrics of a sub-second replay are meaningless
        save_code=False,
        init_timeout=float(settings.init_timeout),
        # W&B's run metadata (host, git commit, python, command line) records sys.argv verbatim: leave
        # it all out when the command line carries a secret
        x_disable_meta=argv_has_secret(sys.argv[1:]),
    )


_online_failed = False  # set by the first failed online init: the process's later runs go offline at once


def _init(wandb: Any, mode: str, settings: TrackerSettings, kwargs: dict[str, Any]) -> tuple[Any, str]:
    """``wandb.init``; an online init that fails retries offline when ``offline_fallback`` is set, and so
    do all later runs of this process (a multirun would otherwise wait ``init_timeout`` per cell)."""
    global _online_failed
    fallback = mode == "online" and settings.offline_fallback
    if fallback and _online_failed:
        mode = "offline"
    try:
        return wandb.init(mode=mode, settings=_wandb_settings(wandb, settings), **kwargs), mode
    except Exception as err:  # noqa: BLE001 - W&B raises many types (CommError, UsageError, timeouts)
        if mode != "online" or not fallback:
            raise
        _online_failed = True
        log.warning("W&B online init failed (%s: %s); this and later runs of this process are logged offline",
                    type(err).__name__, scrub(str(err).splitlines()[0] if str(err) else ""))
        return wandb.init(mode="offline", settings=_wandb_settings(wandb, settings), **kwargs), "offline"


def _replay(wandb: Any, run: Any, payload: Payload) -> list[dict[str, Any]]:
    """Log the payload into an open run; return the logged artifacts' descriptions."""
    run.define_metric(STEP_METRIC)
    for glob in payload.step_globs:
        run.define_metric(glob, step_metric=STEP_METRIC)
    for step in payload.steps:
        run.log(step)
    media: dict[str, Any] = {key: wandb.Table(columns=t.columns, data=t.rows, allow_mixed_types=True)
                             for key, t in payload.tables.items()}
    media.update({key: wandb.Image(str(path)) for key, path in payload.images.items()})
    if media:
        run.log(media)
    run.summary.update(payload.summary)
    logged = []
    for spec in payload.artifacts:
        artifact = wandb.Artifact(spec.name, type=spec.type, description=spec.description or None,
                                  metadata=spec.metadata)
        for name, path in spec.files.items():
            artifact.add_file(str(path), name=name)
        run.log_artifact(artifact, aliases=["latest", *spec.aliases])
        logged.append({"name": spec.name, "type": spec.type, "aliases": ["latest", *spec.aliases],
                       "version": spec.metadata.get("version"), "files": sorted(spec.files),
                       "metadata": spec.metadata})
    return logged


def _record(payload: Payload, artifacts: list[dict[str, Any]], info: dict[str, Any], folder: Path) -> dict[str, Any]:
    """Our readable copy of what was logged (written as wandb_logged.json)."""
    return {
        **info,
        "kind": payload.kind,
        "step_metric": STEP_METRIC,
        "step_globs": payload.step_globs,
        "metric_keys": payload.metric_keys,
        "n_steps": len(payload.steps),
        "layers": [s[STEP_METRIC] for s in payload.steps],
        "summary": payload.summary,
        "tables": {k: {"columns": t.columns, "n_rows": len(t.rows)} for k, t in payload.tables.items()},
        "images": {k: os.path.relpath(p, folder) for k, p in payload.images.items()},
        "artifacts": artifacts,
        "skipped": payload.skipped,
    }


def _log(run_dir: Path, settings: TrackerSettings, mode: str, config: Mapping[str, Any] | None, name: str,
         group: str | None, job_type: str, tags: Iterable[str], extra_files: Iterable[str | Path]) -> TrackedRun:
    """The W&B run itself (any exception propagates to :func:`log_run_folder`)."""
    import wandb

    t0 = time.perf_counter()
    name, job_type = scrub(name), scrub(job_type)
    group = scrub(settings.group or group) if (settings.group or group) else None
    tags = sorted({scrub(t) for t in (*settings.tags, *tags)})
    payload = read_folder(run_dir, name, extra_files)
    if not settings.images:
        payload.images = {}
    if not settings.artifacts:
        payload.artifacts = []
    run_config = redact({**dict(config if config is not None else payload.config or {}),
                         "provenance": payload.provenance})
    wandb_dir = Path(settings.dir) if settings.dir else run_dir
    wandb_dir.mkdir(parents=True, exist_ok=True)
    run, mode = _init(wandb, mode, settings, dict(
        project=settings.project, entity=settings.entity, dir=str(wandb_dir), name=name, group=group,
        job_type=job_type, tags=tags, config=run_config, reinit="create_new"))
    try:
        artifacts = _replay(wandb, run, payload)
    except BaseException:
        run.finish(exit_code=1)  # mark the W&B run failed; never leave it open
        raise
    run_id, url = run.id, (getattr(run, "url", None) if mode == "online" else None)
    local = getattr(run.settings, "sync_dir", None)  # the offline-run-<time>-<id>/ folder
    run.finish()
    seconds = time.perf_counter() - t0
    info = {"name": name, "group": group, "job_type": job_type, "mode": mode, "project": settings.project,
            "entity": settings.entity, "tags": tags, "run_id": run_id, "url": url,
            "wandb_dir": str(local) if local else None, "config_keys": sorted(run_config), "seconds": seconds}
    record = write_json(run_dir / RECORD_NAME, _record(payload, artifacts, info, run_dir))
    for skipped in payload.skipped:
        log.warning("W&B: left out %s", scrub(skipped))
    if mode == "offline":
        log.info("W&B offline run %s (%s) in %s; upload it later with: wandb sync %s", name, run_id,
                 scrub(str(local)), scrub(str(local)))
    else:
        log.info("W&B run %s: %s", name, url)
    return TrackedRun(name=name, group=group, job_type=job_type, mode=mode, run_id=run_id, url=url,
                      wandb_dir=Path(local) if local else None, record=record, seconds=seconds)


def log_run_folder(run_dir: str | Path, *, settings: TrackerSettings | Mapping[str, Any] | None,
                   config: Mapping[str, Any] | None = None, name: str, group: str | None = None,
                   job_type: str, tags: Iterable[str] = (), extra_files: Iterable[str | Path] = ()) -> TrackedRun | None:
    """Log the finished results folder ``run_dir`` as one W&B run; None when tracking is off or failed.

    settings   a :class:`TrackerSettings` or a plain mapping (``cfg.logger``); ``name: none`` or mode
               ``disabled`` does nothing (wandb is not even imported). A bad mapping raises
               :class:`~medinterp.errors.MedinterpError` — build the settings before the run to fail early.
    config     the run's resolved config (secrets are removed here); None = the folder's config (:func:`medinterp.results.read_run`)
    name, group, job_type, tags
               as in ``wandb.init``; ``settings.group`` overrides ``group``; tags are merged
    extra_files  more files for the results artifact (e.g. a multirun's multirun.yaml)

    Never raises for a W&B problem: it is logged as one warning line and None is returned.
    """
    settings = settings if isinstance(settings, TrackerSettings) else TrackerSettings.from_dict(settings)
    if not settings.enabled:
        return None
    try:
        mode = resolve_mode(settings.mode)
        if mode == "disabled":
            return None
        return _log(Path(run_dir), settings, mode, config, name, group, job_type, tags, extra_files)
    except Exception as err:  # noqa: BLE001 - W&B must never fail a run whose results are already written
        log.warning("W&B logging of %s failed (%s: %s); the local results there are complete", run_dir,
                    type(err).__name__, scrub(" ".join(str(err).split())[:300]))
        return None
