"""The jobs of a sweep folder, their settings, and which settings vary.

A sweep folder is what a Hydra multirun writes (``<sweep dir>/<job subdir>/...``) or what
:mod:`medinterp.sweeps.wandb_source` downloads from a W&B sweep. Two kinds of jobs are recognised:

- ``methods``: a folder with ``per_layer.csv`` (runners/map.py), read by :func:`medinterp.results.read_run`.
  Its configuration is the run's ``config.json`` (older folders: summary.json's ``config``, else
  ``.hydra/config.yaml``), Hydra's group choices included (:func:`job_choices`); its *cell* is the (model,
  domain, method) of its rows.
- ``maps``: a folder ``<job>/<model>/knowledge_map.json`` (runners/synthesize.py). Its configuration is the
  map's ``params``; its cell is the model.

Folders holding a sweep summary (``stability.json``) are skipped, so a summary written inside the sweep
folder is never read back as a job.

A *varied key* is a flattened config key (``seed``, ``method.n_neighbors``, ``sigma``) that takes at least
two values among the jobs of one cell; keys matching an ``ignore`` pattern (caches, devices, batch sizes)
never count. Keys that carry the same information (``method.seed`` always equal to ``seed``; a template
index and the template id it selects; ``method.center`` of the umap jobs and the ``robustness.center`` that
set it) are reported once: the one more jobs have, then the one with the fewest dots, then the shortest
name. A *setting* is one combination of the varied keys' values; jobs of the same setting but different
cells (umap and patching of one seed) are synthesised together. Two jobs of the same cell and setting
(a repeated run) become separate settings, told apart by a ``replicate`` number.
"""
from __future__ import annotations

import fnmatch
import json
import re
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from medinterp.errors import MedinterpError, unknown_choice
from medinterp.results import Row, read_run

KINDS = ("auto", "maps", "methods")
SUMMARY_MARKER = "stability.json"   # a folder holding this is a sweep summary, never a job
DEFAULT_IGNORE = ("cache_dir", "device", "batch_size", "*.batch_size", "batch_tokens", "*.batch_tokens",
                  "max_batch_tokens", "*.max_batch_tokens",  # the retired name of batch_tokens (older runs)
                  "*.n_jobs", "use_activation_cache", "plots", "findings", "runs", "out_dir", "logger", "logger.*",
                  "strategy", "strategy.*", "hydra.*")


@dataclass(frozen=True)
class Job:
    """One run of a sweep: where it is, its flattened configuration, and what it produced."""

    name: str                                    # folder relative to the sweep folder ("3", "0_m-age-umap")
    path: Path
    kind: str                                    # "methods" | "maps"
    config: Mapping[str, Any]                    # {dotted key: value}
    rows: tuple[Row, ...] = ()                   # methods: the per_layer rows
    maps: Mapping[str, Path] = field(default_factory=dict)   # maps: model -> knowledge_map.json

    @property
    def cell(self) -> tuple:
        """What a job measures, apart from its settings: (model, domain, method) triples, or models."""
        if self.kind == "maps":
            return tuple(sorted(self.maps))
        return tuple(sorted({(r.model, r.domain, r.method) for r in self.rows}))


@dataclass(frozen=True)
class Setting:
    """One combination of the varied keys' values and the jobs run with it."""

    id: int
    values: Mapping[str, Any]
    jobs: tuple[Job, ...]

    @property
    def label(self) -> str:
        return ", ".join(f"{k}={value_label(v)}" for k, v in self.values.items()) or "(single setting)"


# -- helpers -----------------------------------------------------------------------------------------
def flatten(tree: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"a": {"b": 1}}`` → ``{"a.b": 1}``; lists and scalars are leaves."""
    out: dict[str, Any] = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping) and value:
            out.update(flatten(value, name + "."))
        else:
            out[name] = value
    return out


def canonical(value: Any) -> str:
    """A hashable, order-stable form of a config value (1 and 1.0 are the same setting)."""
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    return json.dumps(value, sort_keys=True, default=str)


def value_label(value: Any) -> str:
    """How a value is shown in tables and figures: lists joined by commas, the rest as str."""
    if isinstance(value, (list, tuple)):
        return ",".join(map(value_label, value))
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def _natural(name: str) -> list:
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", name)]


def _ignored(key: str, ignore: Sequence[str]) -> bool:
    return any(fnmatch.fnmatchcase(key, p) for p in ignore)


# -- reading -----------------------------------------------------------------------------------------
def _in_summary(path: Path, root: Path) -> bool:
    return any((p / SUMMARY_MARKER).exists() for p in [path, *path.parents] if p == root or root in p.parents)


def find_jobs(sweep_dir: str | Path, kind: str = "auto") -> tuple[str, list[Job]]:
    """(kind, jobs) of the sweep folder ``sweep_dir``, jobs in natural order of their folder names."""
    if kind not in KINDS:
        raise unknown_choice("sweep kind", kind, KINDS)
    root = Path(sweep_dir)
    if not root.is_dir():
        raise MedinterpError(f"sweep: no such folder {str(root)!r}")
    tables = [p for p in sorted(root.rglob("per_layer.csv")) if not _in_summary(p.parent, root)]
    maps = [p for p in sorted(root.rglob("knowledge_map.json")) if not _in_summary(p.parent, root)]
    if kind == "auto":
        kind = "methods" if tables else "maps"
    found = tables if kind == "methods" else maps
    if not found:
        raise MedinterpError(f"no {'per_layer.csv' if kind == 'methods' else 'knowledge_map.json'} under {str(root)!r} "
                             f"(sweep kind {kind!r})")
    jobs: list[Job] = []
    if kind == "methods":
        for table in tables:
            run = read_run(table.parent)
            jobs.append(Job(table.parent.relative_to(root).as_posix(), table.parent, kind, flatten(run.config or {}),
                            tuple(run.rows)))
    else:
        by_job: dict[Path, dict[str, Path]] = defaultdict(dict)
        for path in maps:
            by_job[path.parent.parent][path.parent.name] = path
        for folder, models in by_job.items():
            params = json.loads(next(iter(models.values())).read_text())["params"]
            jobs.append(Job(folder.relative_to(root).as_posix(), folder, kind, flatten(params), maps=dict(models)))
    return kind, sorted(jobs, key=lambda j: _natural(j.name))


def job_choices(job: Job) -> dict[str, str]:
    """The config-group choices a job ran with (``{"model": "tiny_llama", "method": "umap", ...}``): its config's
    ``hydra.runtime.choices`` (config.json, written by runners/map.py); for folders written before config.json kept
    them, ``.hydra/hydra.yaml``'s; else (e.g. an older run fetched from W&B) the model, domain and method names of
    its one cell; {} when none is known. Unset choices (null) are left out."""
    prefix = "hydra.runtime.choices."
    choices = {k[len(prefix):]: v for k, v in job.config.items() if k.startswith(prefix)}
    hydra_yaml = job.path / ".hydra" / "hydra.yaml"
    if not choices and hydra_yaml.exists():  # a folder from before config.json kept them
        choices = (yaml.safe_load(hydra_yaml.read_text()) or {}).get("hydra", {}).get("runtime", {}).get("choices", {})
    if not choices and job.kind == "methods" and len(job.cell) == 1:
        choices = dict(zip(("model", "domain", "method"), job.cell[0]))
    return {str(k): str(v) for k, v in (choices or {}).items() if v is not None}


# -- settings ----------------------------------------------------------------------------------------
def varied_keys(jobs: Sequence[Job], ignore: Sequence[str] = DEFAULT_IGNORE) -> list[str]:
    """The config keys that take ≥ 2 values among the jobs of one cell, each piece of information once."""
    by_cell: dict[tuple, list[Job]] = defaultdict(list)
    for job in jobs:
        by_cell[job.cell].append(job)
    keys = sorted({k for j in jobs for k in j.config if not _ignored(k, ignore)})
    varied = [k for k in keys
              if any(len({canonical(j.config.get(k)) for j in group}) > 1 for group in by_cell.values())]
    # the preferred name of equivalent keys comes first: the one more jobs have, then fewest dots, shortest
    present = {k: sum(k in j.config for j in jobs) for k in varied}
    varied.sort(key=lambda k: (-present[k], k.count("."), len(k), k))
    kept: list[str] = []
    for key in varied:
        if not any(_equivalent(key, other, by_cell.values()) for other in kept):
            kept.append(key)
    return kept


def _equivalent(a: str, b: str, groups: Iterable[Sequence[Job]]) -> bool:
    """True when, within every cell that has ``a``, the values of ``a`` and ``b`` determine each other.

    A cell whose jobs all lack ``a`` says nothing against it: ``method.center`` exists only for umap, and
    the robustness experiment's ``robustness.center`` that sets it is what the patching jobs share."""
    for group in groups:
        if not any(a in j.config for j in group):
            continue
        pairs = {(canonical(j.config.get(a)), canonical(j.config.get(b))) for j in group}
        if len({x for x, _ in pairs}) != len(pairs) or len({y for _, y in pairs}) != len(pairs):
            return False
    return True


def settings_of(jobs: Sequence[Job], keys: Sequence[str]) -> list[Setting]:
    """Group jobs by their values of ``keys`` (a repeated cell within a group starts a new replicate)."""
    groups: dict[tuple, list[Job]] = {}
    seen: dict[tuple, int] = defaultdict(int)
    for job in jobs:
        values = tuple(canonical(job.config.get(k)) for k in keys)
        replicate = seen[(values, job.cell)]
        seen[(values, job.cell)] += 1
        groups.setdefault((values, replicate), []).append(job)
    with_replicates = any(r for _, r in groups)
    settings = []
    for i, ((_, replicate), members) in enumerate(groups.items()):
        values = {k: members[0].config.get(k) for k in keys}
        if with_replicates:
            values["replicate"] = replicate
        settings.append(Setting(i, values, tuple(members)))
    return settings
