"""Shared runner plumbing: one-line user errors, early validation of config-group choices, logging."""
from __future__ import annotations

import functools
import logging
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run from a clean clone without installing

from medinterp.errors import MedinterpError, unknown_choice  # noqa: E402

CONF = ROOT / "conf"
log = logging.getLogger("medinterp")


def check_group_choices(argv: list[str], groups: tuple[str, ...]) -> None:
    """Reject ``group=value`` overrides naming no ``conf/<group>/<value>.yaml``, before Hydra starts.

    Handles multirun lists (``domain=age,drugs``); sweep functions (``choice(...)``) are left to Hydra.
    """
    for arg in argv:
        key, sep, value = arg.partition("=")
        key = key.lstrip("+~")
        if not sep or key not in groups or "(" in value:
            continue
        valid = sorted(p.stem for p in (CONF / key).glob("*.yaml"))
        for choice in filter(None, value.split(",")):
            if choice not in valid:
                raise unknown_choice(key, choice, valid)


def user_errors(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Print a :class:`MedinterpError` as one line (``error: ...``) and exit 2, without a traceback."""
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except MedinterpError as err:
            print(f"error: {err}", file=sys.stderr)
            sys.exit(2)
    return wrapper


def exit_cleanly_on_sigterm() -> None:
    """Turn SIGTERM (``kill``, a scheduler's time limit) into SystemExit, so ``finally`` blocks run and
    atomic writers remove their temporary files instead of leaving them behind."""
    import signal

    signal.signal(signal.SIGTERM, lambda signum, _frame: sys.exit(128 + signum))


def quiet_libraries() -> None:
    """Keep third-party chatter out of the run log (transformers' per-tensor progress bars stay)."""
    import warnings

    warnings.filterwarnings("ignore", message=".*n_jobs value.*overridden.*")
    for name in ("numba", "urllib3", "filelock", "httpx"):
        logging.getLogger(name).setLevel(logging.WARNING)


def publish(folder: Path, cfg: Any, *, name: str, job_type: str, group: str | None, report: str | None) -> None:
    """After a folder's results are written: its self-contained ``report.html`` (``report``: run | map |
    summary | None), then W&B (``cfg.logger``; never raises, never changes the results)."""
    from omegaconf import OmegaConf

    if report is not None and OmegaConf.select(cfg, "report", default=True):
        from medinterp.report import write_report

        try:  # the results are already written: a failing report costs the report, never the results
            log.info("report: %s", write_report(folder, kind=report))
        except Exception as err:  # noqa: BLE001
            log.warning("report for %s not written: %s: %s", folder, type(err).__name__, err)
    logger = OmegaConf.select(cfg, "logger")
    if logger is not None:
        from medinterp.tracking import TrackerSettings, log_run_folder

        log_run_folder(folder, settings=TrackerSettings.from_dict(OmegaConf.to_container(logger, resolve=True)),
                       config=OmegaConf.to_container(cfg, resolve=True), name=name, group=group, job_type=job_type)


def log_run_warnings(folder: Path) -> None:
    """Log, as WARNING lines, the ``warnings`` a method put in summary.json's ``method_summary`` (e.g. the
    ablation judge's coverage after an outage); called last, so they end the run's log."""
    import json

    try:
        summary = json.loads((Path(folder) / "summary.json").read_text())
    except (OSError, ValueError):
        return
    for line in (summary.get("method_summary") or {}).get("warnings") or []:
        log.warning("%s", line)


def sweep_group() -> str | None:
    """The W&B group of a Hydra job: its multirun's folder name, or None for a single run."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    hc = HydraConfig.get()
    return Path(hc.sweep.dir).name if hc.mode == RunMode.MULTIRUN else None
