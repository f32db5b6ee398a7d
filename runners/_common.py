"""Shared runner plumbing: one-line user errors, early validation of config-group choices, logging."""
from __future__ import annotations

import functools
import json
import logging
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run from a clean clone without installing

from medinterp.errors import MedinterpError, unknown_choice  # noqa: E402
from medinterp.validation import check_retired_settings, check_run_settings  # noqa: E402

CONF = ROOT / "conf"
log = logging.getLogger("medinterp")


@functools.lru_cache(maxsize=1)  # one process group per process, even across a multirun's cells
def launched_strategy(config_json: str, device: str) -> Any:
    """The strategy the JSON config describes, launched once per process (torn down at exit)."""
    import atexit

    from medinterp.distributed import make_strategy
    from medinterp.registry import build

    strategy = make_strategy(build(json.loads(config_json)), device).launch()
    atexit.register(strategy.teardown)
    return strategy


@functools.lru_cache(maxsize=1)  # a multirun's cells of one model load it once per process
def cached_model(spec: Any, strategy: Any, cache_dir: str) -> Any:
    """``strategy.load(spec, cache_dir)``, kept for the next cell of this process. Module-level (not in the
    runner's ``__main__``), so a process-based Hydra launcher (hydra/launcher=joblib) can pickle the runner."""
    return strategy.load(spec, Path(cache_dir))


def check_group_choices(argv: list[str], groups: tuple[str, ...]) -> None:
    """Reject ``group=value`` overrides naming no ``conf/<group>/<value>.yaml``, and overrides of retired settings
    (``max_batch_tokens=...``: one line saying what replaced them), before Hydra starts.

    Handles multirun lists (``domain=age,drugs``); sweep functions (``choice(...)``) are left to Hydra. A
    ``domain`` value that is a path (see :func:`prompt_file_choices`) must name an existing file.
    """
    check_retired_settings(arg.partition("=")[0].lstrip("+~") for arg in argv)
    for arg in argv:
        key, sep, value = arg.partition("=")
        key = key.lstrip("+~")
        if not sep or key not in groups or "(" in value:
            continue
        valid = sorted(p.stem for p in (CONF / key).glob("*.yaml"))
        for choice in filter(None, value.split(",")):
            if key == "domain" and is_prompt_file(choice):
                if not Path(choice).expanduser().is_file():
                    raise MedinterpError(f"domain={choice}: prompt set file not found: "
                                         f"{Path(choice).expanduser().absolute()}")
            elif choice not in valid:
                error = unknown_choice(key, choice, valid)
                hint = "; or a path to a prompt-set .yaml file (docs/prompt-sets.md)" if key == "domain" else ""
                raise MedinterpError(f"{error}{hint}")


# ---------------------------------------------------------------------------- own prompt files
def is_prompt_file(value: str) -> bool:
    """A ``domain=`` value that names a file rather than conf/domain/<name>.yaml: a path separator or a
    .yaml/.yml suffix (the same rule as :func:`medinterp.prompts.load_prompt_set`)."""
    return "/" in value or "\\" in value or value.endswith((".yaml", ".yml"))


def prompt_file_choices(argv: list[str]) -> list[str]:
    """Make ``domain=<path to a prompt-set .yaml>`` a config-group choice like the packaged domains.

    For each path in a ``domain=`` override (multirun lists too, mixed with packaged names), a
    ``domain`` option ``file-<stem>-<hash of the absolute path>`` is stored in Hydra's ConfigStore with
    ``prompt_set: <absolute path>`` (relative paths resolve against the current directory) and
    ``labelings: null`` (every labeling the file declares); the override is rewritten to name it.
    ``domain.prompt_set=<path>`` (the older form) is left as it is. Deterministic, so every rank of a
    multi-process run rewrites alike.
    """
    import hashlib
    import re

    from hydra.core.config_store import ConfigStore

    out = []
    for arg in argv:
        key, sep, value = arg.partition("=")
        if not sep or key.lstrip("+~") != "domain" or "(" in value:
            out.append(arg)
            continue
        choices = []
        for choice in value.split(","):
            if choice and is_prompt_file(choice):
                path = str(Path(choice).expanduser().absolute())
                stem = re.sub(r"[^A-Za-z0-9_]", "_", Path(path).stem)
                name = f"file-{stem}-{hashlib.sha256(path.encode()).hexdigest()[:8]}"
                ConfigStore.instance().store(group="domain", name=name, node={"prompt_set": path, "labelings": None})
                choice = name
            choices.append(choice)
        out.append(f"{key}={','.join(choices)}")
    return out


def prompt_set_domain(ref: str) -> str:
    """The ``domain`` key of a prompt set (a packaged name, or a YAML file's own ``domain:``), fit for a folder
    name; never raises (an unreadable file gives its stem, and loading it later says what is wrong).

    Registered as the ``medinterp.domain`` resolver: conf/map.yaml names run folders with it.
    """
    import re

    ref = str(ref)
    name = ref
    if is_prompt_file(ref):
        name = Path(ref).stem
        try:
            import yaml

            with open(Path(ref).expanduser(), encoding="utf-8") as f:
                data = yaml.safe_load(f)
            if isinstance(data, dict) and isinstance(data.get("domain"), str) and data["domain"].strip():
                name = data["domain"].strip()
        except Exception:  # noqa: BLE001 - a folder name is no place to report a bad file
            pass
    return re.sub(r"[^\w.-]", "_", name)


def _register_resolvers() -> None:
    from omegaconf import OmegaConf

    if not OmegaConf.has_resolver("medinterp.domain"):
        OmegaConf.register_new_resolver("medinterp.domain", prompt_set_domain)


_register_resolvers()


def map_config(cfg: Any) -> dict[str, Any]:
    """conf/map.yaml as composed, resolved into plain containers with ``per_method.<chosen method>`` merged into
    ``method``, once checked: no retired setting (a machine's conf/local/default.yaml written for an older version:
    medinterp.validation.RETIRED_SETTINGS), and the run-level settings (batch limits, seed) valid before anything
    is loaded; plus Hydra's config-group choices under ``hydra.runtime.choices`` (as in ``.hydra/hydra.yaml``):
    config.json keeps them, so sweeps read a job's choices from it (medinterp/sweeps/jobs.py); ``hydra`` is outside
    the config hash (medinterp.provenance.NUMBER_FREE_KEYS). Call it inside a Hydra run."""
    from hydra.core.hydra_config import HydraConfig
    from omegaconf import OmegaConf

    plain = OmegaConf.to_container(cfg, resolve=True)
    # settings given to one method only, by its name (conf/experiment/robustness.yaml: umap's centring, patching's
    # pair fraction), go into the chosen method's own: config.json and the resume key see the settings it ran with
    chosen = HydraConfig.get().runtime.choices["method"]
    plain["method"].update((plain.pop("per_method", None) or {}).get(chosen) or {})
    check_retired_settings([*plain, *(f"method.{key}" for key in plain.get("method") or {})])
    check_run_settings(batch_size=plain["batch_size"], seed=plain["seed"], batch_tokens=plain["batch_tokens"])
    plain["hydra"] = {"runtime": {"choices": OmegaConf.to_container(HydraConfig.get().runtime.choices)}}
    return plain


def map_settings(cfg: Any) -> dict[str, Any]:
    """The knowledge-map settings (``cfg.map``, from conf/synthesis/<name>.yaml) as a plain dict. ``map=<name>``
    (the group's name before it was renamed conf/synthesis/) replaces them by a string: one line saying so."""
    from omegaconf import DictConfig, OmegaConf

    if not isinstance(cfg.map, DictConfig):
        valid = sorted(p.stem for p in (ROOT / "conf" / "synthesis").glob("*.yaml"))
        raise MedinterpError(f"map={cfg.map}: map holds the knowledge-map settings (map.sigma=2.0, ...); a settings "
                             f"file is chosen with synthesis=<name>; valid: {', '.join(valid)}")
    return OmegaConf.to_container(cfg.map, resolve=True)


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
    """Keep third-party chatter out of the run log (transformers' per-tensor progress bars stay), and under a
    multi-process launch keep one log: rank 0's."""
    import warnings

    from medinterp.distributed import launcher_rank

    warnings.filterwarnings("ignore", message=".*n_jobs value.*overridden.*")
    for name in ("numba", "urllib3", "filelock", "httpx"):
        logging.getLogger(name).setLevel(logging.WARNING)
    if launcher_rank()[0] != 0:
        logging.getLogger("medinterp").setLevel(logging.WARNING)


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


def private_run_dir_for_other_ranks(argv: list[str]) -> list[str]:
    """On ranks other than 0: point Hydra's run/sweep folders at a private temporary folder, and write no
    Hydra files (``.hydra/``, the job log), so only rank 0 creates and writes the output folder."""
    import atexit
    import shutil
    import tempfile

    from medinterp.distributed import launcher_rank

    rank, _ = launcher_rank()
    if rank == 0:
        return argv
    private = tempfile.mkdtemp(prefix=f"medinterp-rank{rank}-")
    atexit.register(shutil.rmtree, private, True)
    owned = ("hydra.run.dir=", "hydra.sweep.dir=", "hydra.output_subdir=", "hydra.job.name=", "hydra/job_logging=")
    kept = [a for a in argv if not a.lstrip("+").startswith(owned)]
    return kept + [f"hydra.run.dir={private}", f"hydra.sweep.dir={private}", "hydra.output_subdir=null",
                   "hydra/job_logging=stdout"]
