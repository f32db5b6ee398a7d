"""The one results format every stage reads: a long per-layer table, plus a run summary.

``per_layer.csv`` has one row per (model, domain, labeling, method, metric, layer):

    model, domain, labeling, method, metric, layer, value, ci_low, ci_high, n, note, [tokens,] run_id, seed, config_hash

- ``labeling`` names what was separated or regressed, with an optional ``/subset`` (``mechanism``,
  ``stage/parkinsons``, ``age/female``);
- ``layer`` is the read-out point 0..n_layers (0 = embeddings); ``-1`` marks a layer-independent
  baseline (the surface-form control);
- ``ci_low``/``ci_high`` are a 95 % interval (empty where a metric has none); ``n`` is the sample size;
- ``note`` is empty, or says why a value is missing or must be read with care (``degenerate: 1 distinct
  row``, ``judge coverage 0.00 < 0.80``, ...): a NaN value always carries a note, a fault is never a
  silent number;
- ``tokens`` (only in tables of vision-language prompt sets): the token type the row was measured on,
  ``image``, ``text`` or ``all`` (medinterp/methods/tokens.py); a table without the column reads back empty;
- ``run_id``, ``seed``, ``config_hash``: which run wrote the row, its seed, and the hash of the settings
  that decide its numbers (:mod:`medinterp.provenance`), stamped by :meth:`RunWriter.finish`.

:class:`RunWriter` collects rows, figures and the summary of one run and writes them atomically into
the run folder. Later sinks (W&B) subscribe to the same calls.

``per_item.csv`` (model methods: saliency, ablation, patching) holds the values the per-layer means are
taken over, one row per (item or pair, metric, layer):

    model, domain, method, labeling, metric, layer, item, template, value, note, run_id, seed, config_hash

- ``item`` is the item id (saliency, ablation) or the pair id (patching); ``template`` the template id
  of the prompt (empty for patching pairs, which are whole prompts);
- ``note`` is empty for a value that enters the per-layer mean, else why it does not (a filtered pair,
  a judge that gave no score): the per_layer ``value`` is the mean of the rows with an empty note and a
  finite value (docs/results-format.md).

A run folder holds ``per_layer.csv``, ``summary.json``, ``config.json`` (the resolved config, secrets
removed), figures and, for model methods, ``per_item.csv``. :func:`read_run` is the one reader of run
folders (reports, tracking and sweeps use it). **Old folders** read as well: tables without ``note``,
``run_id``, ``seed`` or ``config_hash`` read back with empty notes and ids and seed None; a folder without
``config.json`` takes its config from ``summary.json``'s ``config`` (written before config.json existed),
else from Hydra's ``.hydra/config.yaml``.

A results folder is never silently overwritten: :class:`RunWriter` refuses a folder that already holds
a ``per_layer.csv``.
"""
from __future__ import annotations

import csv
import dataclasses
import json
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import yaml

from medinterp.errors import MedinterpError
from medinterp.io import atomic_write, save_png, write_json
from medinterp.provenance import config_hash, run_id
from medinterp.secrets import redact

PROVENANCE_COLUMNS = ("run_id", "seed", "config_hash")
COLUMNS = ("model", "domain", "labeling", "method", "metric", "layer", "value", "ci_low", "ci_high", "n", "note",
           *PROVENANCE_COLUMNS)
TOKEN_COLUMNS = (*COLUMNS[:11], "tokens", *PROVENANCE_COLUMNS)  # a table whose rows carry a token type (VLM sets)
ITEM_COLUMNS = ("model", "domain", "method", "labeling", "metric", "layer", "item", "template", "value", "note",
                *PROVENANCE_COLUMNS)


@dataclass(frozen=True)
class Row:
    """One per-layer measurement."""

    model: str
    domain: str
    labeling: str
    method: str
    metric: str
    layer: int
    value: float
    ci_low: float = math.nan
    ci_high: float = math.nan
    n: int = 0
    note: str = ""
    run_id: str = ""             # stamped by RunWriter.finish; empty in tables written before it
    seed: int | None = None
    config_hash: str = ""
    tokens: str = ""             # vision-language prompt sets: the token type read (image, text, all); else empty


@dataclass(frozen=True)
class ItemRow:
    """One per-item value: the measurement of one item (or contrast pair) that a per-layer mean averages."""

    model: str
    domain: str
    method: str
    labeling: str
    metric: str
    layer: int
    item: str
    template: str
    value: float
    note: str = ""  # non-empty: the value does not enter the per-layer mean, and why
    run_id: str = ""
    seed: int | None = None
    config_hash: str = ""


def _fmt(v: Any) -> str:
    if v is None:
        return ""
    if isinstance(v, float):
        return "" if math.isnan(v) else repr(v)
    return str(v)


def _write_table(path: str | Path, columns: Sequence[str], rows: Iterable[Any]) -> Path:
    """Atomically write dataclass ``rows`` as a CSV of ``columns`` (NaN as an empty cell)."""
    def write(f):
        w = csv.writer(f)
        w.writerow(columns)
        for r in rows:
            w.writerow([_fmt(getattr(r, c)) for c in columns])
    return atomic_write(path, write, newline="")


def _num(cell: str) -> float:
    return float(cell) if cell != "" else math.nan


def _provenance(r: Mapping[str, str]) -> dict[str, Any]:
    """The provenance cells of a CSV row; a table written before they existed gives empty ids, seed None."""
    seed = r.get("seed") or ""
    return {"run_id": r.get("run_id") or "", "seed": int(seed) if seed else None,
            "config_hash": r.get("config_hash") or ""}


def write_rows(path: str | Path, rows: Iterable[Row]) -> Path:
    """Atomically write ``rows`` as a per_layer CSV (the ``tokens`` column only when a row carries a token type)."""
    rows = list(rows)
    return _write_table(path, TOKEN_COLUMNS if any(r.tokens for r in rows) else COLUMNS, rows)


def read_rows(path: str | Path) -> list[Row]:
    """Read a per_layer CSV back into rows (empty cells become NaN; older tables: see the module docstring).

    A file that is not a per_layer table is a :class:`MedinterpError` naming it."""
    with open(path, newline="", encoding="utf-8") as f:
        try:
            return [Row(model=r["model"], domain=r["domain"], labeling=r["labeling"], method=r["method"],
                        metric=r["metric"], layer=int(r["layer"]), value=_num(r["value"]), ci_low=_num(r["ci_low"]),
                        ci_high=_num(r["ci_high"]), n=int(r["n"]), note=r.get("note") or "", **_provenance(r),
                        tokens=r.get("tokens") or "")
                    for r in csv.DictReader(f)]
        except (KeyError, ValueError, TypeError) as err:
            raise MedinterpError(f"{str(path)!r} is not a per_layer table ({type(err).__name__}: {err})") from None


def write_item_rows(path: str | Path, rows: Iterable[ItemRow]) -> Path:
    """Atomically write ``rows`` as a per_item CSV."""
    return _write_table(path, ITEM_COLUMNS, rows)


def read_item_rows(path: str | Path) -> list[ItemRow]:
    """Read a per_item CSV back into rows (an empty value cell becomes NaN; older tables: see the module docstring)."""
    with open(path, newline="", encoding="utf-8") as f:
        return [ItemRow(model=r["model"], domain=r["domain"], method=r["method"], labeling=r["labeling"],
                        metric=r["metric"], layer=int(r["layer"]), item=r["item"], template=r["template"],
                        value=_num(r["value"]), note=r["note"], **_provenance(r)) for r in csv.DictReader(f)]


def best_layers(rows: Sequence[Row]) -> list[dict[str, Any]]:
    """For each (domain, labeling, method, metric): the layer with the largest value (layers ≥ 0)."""
    best: dict[tuple, Row] = {}
    for r in rows:
        if r.layer < 0 or math.isnan(r.value):
            continue
        key = (r.domain, r.labeling, r.method, r.metric)
        if key not in best or r.value > best[key].value:
            best[key] = r
    return [{"domain": r.domain, "labeling": r.labeling, "method": r.method, "metric": r.metric, "layer": r.layer,
             "value": r.value, "ci_low": r.ci_low, "ci_high": r.ci_high} for r in best.values()]


class RunWriter:
    """Collects one run's rows, figures and summary, and writes them atomically into ``out_dir``.

    A folder that already holds a ``per_layer.csv`` is refused (:class:`MedinterpError`, at construction
    and again before writing): two runs, or two jobs of a multirun, never replace each other's results.
    ``run_id`` is :func:`medinterp.provenance.run_id` of the folder's name and the writer's start time.
    """

    def __init__(self, out_dir: str | Path):
        self.out_dir = Path(out_dir)
        self._refuse_existing()
        self.out_dir.mkdir(parents=True, exist_ok=True)
        self.started_at = datetime.now(timezone.utc).isoformat()
        self.run_id = run_id(self.out_dir.name, self.started_at)
        self.rows: list[Row] = []
        self.item_rows: list[ItemRow] = []
        self.figures: list[Path] = []

    def _refuse_existing(self) -> None:
        existing = self.out_dir / "per_layer.csv"
        if existing.exists():
            raise MedinterpError(f"{existing} already exists: results are never overwritten; choose another "
                                 f"output folder (hydra.run.dir=...) or move the old one away")

    def add_rows(self, rows: Iterable[Row]) -> None:
        self.rows.extend(rows)

    def add_item_rows(self, rows: Iterable[ItemRow]) -> None:
        """Per-item values (written as ``per_item.csv`` by :meth:`finish` when there are any)."""
        self.item_rows.extend(rows)

    def add_figure(self, name: str, figure: Any) -> Path:
        """Save a matplotlib figure as ``<out_dir>/<name>.png`` (atomically) and close it."""
        path = save_png(figure, self.out_dir / f"{name}.png")
        self.figures.append(path)
        return path

    def finish(self, summary: dict[str, Any]) -> Path:
        """Write ``config.json``, ``per_item.csv`` (when there are per-item rows), ``per_layer.csv`` and
        ``summary.json`` (with the best layer per metric); return the folder.

        ``summary["config"]`` (the resolved config; when given) moves to ``config.json`` with secrets
        removed (:func:`medinterp.secrets.redact`); every row is stamped with this run's ``run_id``, the
        config's ``seed`` and its :func:`~medinterp.provenance.config_hash`, which summary.json records too.
        """
        self._refuse_existing()  # a concurrent job may have written here since construction
        summary = dict(summary)
        config = redact(summary.pop("config", None) or {})
        stamp = {"run_id": self.run_id, "seed": config.get("seed"),
                 "config_hash": config_hash(config) if config else ""}
        if config:
            write_json(self.out_dir / "config.json", config)
        if self.item_rows:  # before per_layer.csv: a folder with per_layer.csv is complete
            write_item_rows(self.out_dir / "per_item.csv", (dataclasses.replace(r, **stamp) for r in self.item_rows))
        rows = [dataclasses.replace(r, **stamp) for r in self.rows]
        write_rows(self.out_dir / "per_layer.csv", rows)
        summary = {**summary, **stamp, "started_at": self.started_at, "best_layers": best_layers(rows),
                   "n_rows": len(rows), "n_item_rows": len(self.item_rows), "figures": [p.name for p in self.figures]}
        write_json(self.out_dir / "summary.json", summary)
        return self.out_dir


def folder_kind(folder: str | Path) -> str | None:
    """What a results folder holds: ``"summary"`` (a sweep summary: stability.* or robustness.*), ``"map"``
    (knowledge_map.json), ``"atlas"`` (a model comparison: agreement.json + table1.csv), ``"validity"``
    (validity.json of runners/validate.py), ``"run"`` (per_layer.csv + summary.json of one cell), or None."""
    names = {p.name for p in Path(folder).iterdir() if p.is_file()}
    if any(n.startswith(("stability.", "robustness.")) for n in names):
        return "summary"
    if "knowledge_map.json" in names:
        return "map"
    if {"agreement.json", "table1.csv"} <= names:
        return "atlas"
    if "validity.json" in names:
        return "validity"
    if {"per_layer.csv", "summary.json"} <= names:
        return "run"
    return None



@dataclass
class RunFolder:
    """One run folder as read back: per-layer rows, summary, config; per-item rows on demand (they can be large)."""

    path: Path
    rows: list[Row]
    summary: dict[str, Any]
    config: dict[str, Any] | None = None     # config.json, else the old places (module docstring); None: unknown

    def item_rows(self) -> list[ItemRow]:
        """``per_item.csv``'s rows ([] when the run wrote none)."""
        path = self.path / "per_item.csv"
        return read_item_rows(path) if path.exists() else []


def read_config(folder: str | Path, summary: Mapping[str, Any] | None = None) -> dict[str, Any] | None:
    """A result folder's resolved config: config.json; else (folders written before config.json) ``summary``'s
    ``config`` (summary.json's), else Hydra's ``.hydra/config.yaml``; None when there is none."""
    folder = Path(folder)
    path = folder / "config.json"
    if path.exists():
        return _json_file(path)
    if summary is not None and isinstance(summary.get("config"), Mapping):
        return dict(summary["config"])
    hydra = folder / ".hydra" / "config.yaml"
    if hydra.exists():
        return yaml.safe_load(hydra.read_text(encoding="utf-8")) or {}
    return None


def read_run(folder: str | Path) -> RunFolder:
    """Read a run folder (``per_layer.csv``; ``summary.json`` and ``config.json`` when present).

    The one reader of run folders: reports, tracking and sweeps go through it. A missing or malformed file
    is a :class:`MedinterpError` naming it.
    """
    folder = Path(folder)
    table = folder / "per_layer.csv"
    if not table.is_file():
        raise MedinterpError(f"no per_layer.csv in run folder '{folder}'")
    rows = read_rows(table)
    summary = _json_file(folder / "summary.json") if (folder / "summary.json").is_file() else {}
    return RunFolder(folder, rows, summary, read_config(folder, summary))


def _json_file(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise MedinterpError(f"{path} is not valid JSON ({err})") from None
