"""The one results format every stage reads: a long per-layer table, plus a run summary.

``per_layer.csv`` has one row per (model, domain, labeling, method, metric, layer):

    model, domain, labeling, method, metric, layer, value, ci_low, ci_high, n, note

- ``labeling`` names what was separated or regressed, with an optional ``/subset`` (``mechanism``,
  ``stage/parkinsons``, ``age/female``);
- ``layer`` is the read-out point 0..n_layers (0 = embeddings); ``-1`` marks a layer-independent
  baseline (the surface-form control);
- ``ci_low``/``ci_high`` are a 95 % interval (empty where a metric has none); ``n`` is the sample size;
- ``note`` is empty, or says why a value is missing or must be read with care (``degenerate: 1 distinct
  row``, ``judge coverage 0.00 < 0.80``, ...): a NaN value always carries a note, a fault is never a
  silent number. Tables written before the column existed read back with an empty note.

:class:`RunWriter` collects rows, figures and the summary of one run and writes them atomically into
the run folder. Later sinks (W&B) subscribe to the same calls.

``per_item.csv`` (model methods: saliency, ablation, patching) holds the values the per-layer means are
taken over, one row per (item or pair, metric, layer):

    model, domain, method, labeling, metric, layer, item, template, value, note

- ``item`` is the item id (saliency, ablation) or the pair id (patching); ``template`` the template id
  of the prompt (empty for patching pairs, which are whole prompts);
- ``note`` is empty for a value that enters the per-layer mean, else why it does not (a filtered pair,
  a judge that gave no score): the per_layer ``value`` is the mean of the rows with an empty note and a
  finite value (docs/results-format.md).

A results folder is never silently overwritten: :class:`RunWriter` refuses a folder that already holds
a ``per_layer.csv``.
"""
from __future__ import annotations

import csv
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from medinterp.errors import MedinterpError
from medinterp.io import atomic_path, atomic_write, write_json

COLUMNS = ("model", "domain", "labeling", "method", "metric", "layer", "value", "ci_low", "ci_high", "n", "note")
ITEM_COLUMNS = ("model", "domain", "method", "labeling", "metric", "layer", "item", "template", "value", "note")


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


def _fmt(v: Any) -> str:
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


def write_rows(path: str | Path, rows: Iterable[Row]) -> Path:
    """Atomically write ``rows`` as a per_layer CSV."""
    return _write_table(path, COLUMNS, rows)


def read_rows(path: str | Path) -> list[Row]:
    """Read a per_layer CSV back into rows (empty cells become NaN; a table without ``note`` reads as empty notes)."""
    with open(path, newline="", encoding="utf-8") as f:
        return [Row(model=r["model"], domain=r["domain"], labeling=r["labeling"], method=r["method"], metric=r["metric"],
                    layer=int(r["layer"]), value=_num(r["value"]), ci_low=_num(r["ci_low"]), ci_high=_num(r["ci_high"]),
                    n=int(r["n"]), note=r.get("note") or "") for r in csv.DictReader(f)]


def write_item_rows(path: str | Path, rows: Iterable[ItemRow]) -> Path:
    """Atomically write ``rows`` as a per_item CSV."""
    return _write_table(path, ITEM_COLUMNS, rows)


def read_item_rows(path: str | Path) -> list[ItemRow]:
    """Read a per_item CSV back into rows (an empty value cell becomes NaN)."""
    with open(path, newline="", encoding="utf-8") as f:
        return [ItemRow(model=r["model"], domain=r["domain"], method=r["method"], labeling=r["labeling"],
                        metric=r["metric"], layer=int(r["layer"]), item=r["item"], template=r["template"],
                        value=_num(r["value"]), note=r["note"]) for r in csv.DictReader(f)]


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
    """

    def __init__(self, out_dir: str | Path):
        self.out_dir = Path(out_dir)
        self._refuse_existing()
        self.out_dir.mkdir(parents=True, exist_ok=True)
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
        import matplotlib.pyplot as plt

        path = self.out_dir / f"{name}.png"
        with atomic_path(path) as tmp:
            figure.savefig(tmp, format="png", dpi=110, bbox_inches="tight")
        plt.close(figure)
        self.figures.append(path)
        return path

    def finish(self, summary: dict[str, Any]) -> Path:
        """Write ``per_layer.csv``, ``per_item.csv`` (when there are per-item rows) and ``summary.json`` (with
        the best layer per metric); return the folder."""
        self._refuse_existing()  # a concurrent job may have written here since construction
        if self.item_rows:  # before per_layer.csv: a folder with per_layer.csv is complete
            write_item_rows(self.out_dir / "per_item.csv", self.item_rows)
        write_rows(self.out_dir / "per_layer.csv", self.rows)
        summary = {**summary, "best_layers": best_layers(self.rows), "n_rows": len(self.rows),
                   "n_item_rows": len(self.item_rows), "figures": [p.name for p in self.figures]}
        write_json(self.out_dir / "summary.json", summary)
        return self.out_dir


def folder_kind(folder: str | Path) -> str | None:
    """What a results folder holds: ``"summary"`` (a sweep summary: stability.* or robustness.*), ``"map"``
    (knowledge_map.json), ``"run"`` (per_layer.csv + summary.json of one cell), or None."""
    names = {p.name for p in Path(folder).iterdir() if p.is_file()}
    if any(n.startswith(("stability.", "robustness.")) for n in names):
        return "summary"
    if "knowledge_map.json" in names:
        return "map"
    if {"per_layer.csv", "summary.json"} <= names:
        return "run"
    return None

