"""Results files as plain tables (columns + rows of JSON scalars), ready for ``wandb.Table``.

per_layer_table      per_layer.csv, all its columns (NaN values and CI cells, and a missing seed, become None)
best_layers_table    summary.json's ``best_layers``
knowledge_map_table  knowledge_map.json's intervals: one row per (domain, method, kind, interval)
flatten_json         any JSON (findings.json, a sweep summary) as rows of (path, layer, value, ci_low,
                     ci_high, n, text): a dict holding ``layer`` and ``value`` is one measurement row;
                     every other leaf is one row with its number in ``value`` or its text in ``text``
csv_table            any CSV, cells kept as text except numbers

No W&B here: everything is testable on plain data, and the same tables are summarised in
wandb_logged.json.
"""
from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from medinterp.io import read_csv_cells
from medinterp.results import COLUMNS, Row

FLAT_COLUMNS = ("path", "layer", "value", "ci_low", "ci_high", "n", "text")
MAP_COLUMNS = ("domain", "method", "metric", "rule", "kind", "start", "end")
BEST_COLUMNS = ("domain", "labeling", "method", "metric", "layer", "value", "ci_low", "ci_high")
_MEASUREMENT_KEYS = ("layer", "value", "ci_low", "ci_high", "n")


@dataclass
class Table:
    """A table of JSON scalars; ``rows`` are lists in ``columns`` order."""

    columns: list[str]
    rows: list[list[Any]] = field(default_factory=list)


def _num(value: Any) -> float | None:
    """A finite float, or None (W&B tables and JSON have no NaN)."""
    if value is None or isinstance(value, bool):
        return None
    try:
        out = float(value)
    except (TypeError, ValueError):
        return None
    return out if math.isfinite(out) else None


def per_layer_table(rows: Sequence[Row]) -> Table:
    """per_layer.csv as a table with its columns (:data:`medinterp.results.COLUMNS`, in order)."""
    cells = [[getattr(r, c) for c in COLUMNS] for r in rows]
    return Table(list(COLUMNS), [[_num(c) if isinstance(c, float) else c for c in row] for row in cells])


def best_layers_table(best: Iterable[Mapping[str, Any]]) -> Table:
    """summary.json's ``best_layers`` entries as rows."""
    rows = [[b.get("domain"), b.get("labeling"), b.get("method"), b.get("metric"), b.get("layer"),
             _num(b.get("value")), _num(b.get("ci_low")), _num(b.get("ci_high"))] for b in best]
    return Table(list(BEST_COLUMNS), rows)


def knowledge_map_table(kmap: Mapping[str, Any]) -> Table:
    """One row per interval of knowledge_map.json: kind ``interval`` (a method's layers), ``r2``
    (the age rule's R² intervals), ``anisotropy`` (its anisotropy intervals) or ``consensus``."""
    rows = []
    for domain, entry in sorted(kmap.get("domains", {}).items()):
        for method, channel in entry.items():
            if method == "consensus":
                rows += [[domain, "consensus", None, None, "consensus", a, b] for a, b in channel]
                continue
            metric, rule = channel.get("metric"), channel.get("rule")
            rows += [[domain, method, metric, rule, "interval", a, b] for a, b in channel.get("intervals", [])]
            rows += [[domain, method, metric, rule, "r2", a, b] for a, b in channel.get("r2_intervals", [])]
            aniso = channel.get("anisotropy")
            if isinstance(aniso, Mapping):
                rows += [[domain, method, aniso.get("metric"), rule, "anisotropy", a, b]
                         for a, b in aniso.get("intervals", [])]
    return Table(list(MAP_COLUMNS), rows)


def map_curves(kmap: Mapping[str, Any]) -> dict[str, list[float | None]]:
    """Per-layer curves of a knowledge map, keyed ``knowledge_map/<domain>/<method>`` (smoothed) and
    ``.../raw`` (unsmoothed); the age rule's anisotropy channel adds ``.../anisotropy[/raw]``."""
    curves: dict[str, list[float | None]] = {}
    for domain, entry in sorted(kmap.get("domains", {}).items()):
        for method, channel in entry.items():
            if method == "consensus" or not isinstance(channel, Mapping):
                continue
            base = f"knowledge_map/{domain}/{method}"
            for prefix, source in ((base, channel), (f"{base}/anisotropy", channel.get("anisotropy"))):
                if not isinstance(source, Mapping):
                    continue
                if "curve" in source:
                    curves[prefix] = [_num(v) for v in source["curve"]]
                if "raw" in source:
                    curves[f"{prefix}/raw"] = [_num(v) for v in source["raw"]]
    return curves


def _is_measurement(obj: Any) -> bool:
    return isinstance(obj, Mapping) and "layer" in obj and "value" in obj


def flatten_json(data: Any) -> Table:
    """Any JSON value as rows of :data:`FLAT_COLUMNS` (see the module docstring).

    Paths join keys with ``/``; list items of measurements keep their parent's path (``layer`` tells
    them apart), other list items get ``[i]``. A list of scalars is one row with its JSON text.
    """
    rows: list[list[Any]] = []

    def leaf(path: str, value: Any) -> None:
        number = _num(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None
        text = None if number is not None else (value if isinstance(value, str) else json.dumps(value))
        rows.append([path, None, number, None, None, None, text])

    def walk(path: str, obj: Any) -> None:
        if _is_measurement(obj):
            n = obj.get("n")
            rows.append([path, obj.get("layer"), _num(obj.get("value")), _num(obj.get("ci_low")),
                         _num(obj.get("ci_high")), n if isinstance(n, int) else None, None])
            for k, v in obj.items():  # extra fields of a measurement (null, beats_null, series, ...)
                if k not in _MEASUREMENT_KEYS:
                    walk(f"{path}/{k}", v)
        elif isinstance(obj, Mapping):
            for k, v in obj.items():
                walk(f"{path}/{k}" if path else str(k), v)
        elif isinstance(obj, list) and obj and all(isinstance(v, (Mapping, list)) for v in obj):
            for i, v in enumerate(obj):
                walk(path if _is_measurement(v) else f"{path}[{i}]", v)
        else:
            leaf(path, obj)

    walk("", data)
    return Table(list(FLAT_COLUMNS), rows)


def csv_table(path: str | Path, max_rows: int | None = None) -> tuple[Table, int]:
    """A CSV file as a table (:func:`medinterp.io.read_csv_cells`; NaN and infinities become None, as W&B
    tables have no NaN); returns (table, total rows)."""
    header, cells, total = read_csv_cells(path, max_rows)
    return Table(header, [[_num(c) if isinstance(c, float) else c for c in row] for row in cells]), total
