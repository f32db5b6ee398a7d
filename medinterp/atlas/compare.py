"""The comparison stage: several models' stored results → Table 1, the atlas figure and their agreement.

Reads only ``per_layer.csv`` tables (and each run's ``summary.json`` for the model's layer count), never a
model. For the runs given (folders of maps or multiruns, any number of models):

1. every table is read once; two run folders holding the same (model, domain, method) are an error naming
   both (keep one), a folder without a ``per_layer.csv`` too (medinterp.maps.synthesis.find_tables);
2. per model: ``n_layers`` (summary.json's ``model.n_layers``; else the largest read-out of its knowledge
   map), its knowledge map and findings (medinterp.maps, with the map parameters given);
3. ``table1.csv`` / ``table1.md`` (medinterp/atlas/table1.py), ``agreement.json`` (medinterp/atlas/agreement.py)
   and ``atlas.png`` (medinterp/atlas/plot.py) are written into ``out_dir``.

One model only: a warning, and its single-model table, findings and figure (no pairs to agree). Models that
share no domain (no domain mapped by two of them): an error naming each model's domains.
"""
from __future__ import annotations

import json
import logging
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from medinterp.atlas import agreement as ag
from medinterp.atlas.depth import GRID_POINTS, grid
from medinterp.atlas.table1 import PAPER_CONCEPTS, Concept, csv_rows, markdown, table1
from medinterp.errors import MedinterpError
from medinterp.io import atomic_write, save_png, write_json
from medinterp.maps.findings import FindingsParams, findings
from medinterp.maps.synthesis import MapParams, Table, build_map, find_tables, map_silhouettes
from medinterp.results import Row, read_rows

log = logging.getLogger(__name__)
FILES = ("table1.csv", "table1.md", "agreement.json", "atlas.png")


def read_runs(runs: str | Path | Iterable[str | Path]) -> tuple[Table, dict[str, int]]:
    """All rows under ``runs`` (one :class:`Table`) and, per model, the ``n_layers`` its runs' summary.json name.

    Two run folders with the same (model, domain, method): one line naming both and asking to keep one.
    """
    rows: list[Row] = []
    sources: list[str] = []
    owner: dict[tuple[str, str, str], Path] = {}
    n_layers: dict[str, int] = {}
    seen: set[Path] = set()
    for path, name in find_tables(runs):
        folder = path.parent
        if path.resolve() in seen:
            raise MedinterpError(f"runs names '{folder}' twice (directly and inside another folder): keep one")
        seen.add(path.resolve())
        table_rows = read_rows(path)
        for key in sorted({(r.model, r.domain, r.method) for r in table_rows}):
            if key in owner and owner[key] != folder:
                raise MedinterpError(f"runs '{owner[key]}' and '{folder}' both hold {'/'.join(key)}: keep one of "
                                     "them (pass one run per model, domain and method)")
            owner[key] = folder
        n = _summary_layers(folder)
        for model in {r.model for r in table_rows}:
            if n is not None:
                n_layers[model] = max(n, n_layers.get(model, 0))
        rows += table_rows
        sources += [name] * len(table_rows)
    if not rows:
        raise MedinterpError(f"the per_layer tables under {runs!r} have no rows")
    return Table(tuple(rows), tuple(sources)), n_layers


def _summary_layers(folder: Path) -> int | None:
    """``model.n_layers`` of a run's summary.json, or None (no file, older format)."""
    try:
        summary = json.loads((folder / "summary.json").read_text(encoding="utf-8"))
        return int(summary["model"]["n_layers"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def shared_domains(domains_by_model: dict[str, set[str]]) -> list[str]:
    """Domains mapped by at least two models; none (with ≥ 2 models): one line naming every model's domains."""
    count: dict[str, int] = defaultdict(int)
    for ds in domains_by_model.values():
        for d in ds:
            count[d] += 1
    shared = sorted(d for d, c in count.items() if c >= 2)
    if len(domains_by_model) >= 2 and not shared:
        have = "; ".join(f"{m} has {', '.join(sorted(ds))}" for m, ds in sorted(domains_by_model.items()))
        raise MedinterpError(f"the models share no domain ({have}); compare needs a domain mapped by two of them")
    return shared


@dataclass(frozen=True)
class Comparison:
    """What :func:`compare` wrote and computed."""

    out_dir: Path
    models: list[str]
    files: list[Path]
    agreement: dict[str, Any]

    @property
    def score(self) -> float:
        """Mean pairwise consensus Jaccard over domains (NaN with one model): for sweepers."""
        return ag.summary_score(self.agreement["domains"])


def compare(runs: str | Path | Iterable[str | Path], out_dir: str | Path, params: MapParams | None = None,
            findings_params: FindingsParams | None = None, concepts: Sequence[Concept] = PAPER_CONCEPTS,
            grid_points: int = GRID_POINTS, figures: bool = True) -> Comparison:
    """Write table1.csv, table1.md, agreement.json and (``figures``) atlas.png into ``out_dir``."""
    params = params or MapParams()
    findings_params = findings_params or FindingsParams()
    depths = grid(grid_points)
    table, n_layers = read_runs(runs)
    models = table.models()
    if len(models) == 1:
        log.warning("compare: one model only (%s): writing its single-model table; no agreement to measure",
                    models[0])
    by_model = {m: table.of(m) for m in models}
    shared = shared_domains({m: {r.domain for r, _ in rows} for m, rows in by_model.items()})
    kmaps = {m: build_map(rows, params) for m, rows in by_model.items()}
    for m, kmap in kmaps.items():
        n_layers.setdefault(m, kmap["n_layers"])
    found = {m: findings([r for r, _ in by_model[m]], map_silhouettes(kmaps[m]), findings_params) for m in models}
    cells = table1({m: [r for r, _ in rows] for m, rows in by_model.items()}, n_layers, concepts)

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    files = [_write_csv(out / "table1.csv", csv_rows(cells)),
             atomic_write(out / "table1.md", lambda f: f.write(markdown(cells, concepts)))]
    agreement = {
        "models": {m: {"n_layers": n_layers[m], "domains": sorted({r.domain for r, _ in by_model[m]})} for m in models},
        "shared_domains": shared,
        "note": "one model only: no pairs to compare" if len(models) == 1 else "",
        "grid": [float(x) for x in depths],
        "definitions": {
            "depth": "layer / n_layers (0 = embeddings, 1 = the last block's raw output)",
            "depth_interval": "a selected read-out interval [a, b] covers depths [(a - 0.5)/n, (b + 0.5)/n] clipped to [0, 1]",
            "jaccard": "|A intersect B| / |A union B| of two models' depth intervals; null when neither selected a layer",
            "spearman": "Spearman rho of the two raw per-layer curves linearly resampled to the grid; bootstrap 95 % CI "
                        "over grid points",
        },
        "map_params": params.as_dict(),
        "domains": ag.domain_agreement(kmaps, n_layers, grid_points),
        "findings": ag.findings_table(found, n_layers),
        "sources": sorted(set(table.sources)),
    }
    files.append(write_json(out / "agreement.json", agreement))
    if figures:
        from medinterp.atlas.plot import atlas_figure

        domains = sorted({d for k in kmaps.values() for d in k["domains"]})
        files.append(save_png(atlas_figure(kmaps, n_layers, domains, list(params.methods)), out / "atlas.png"))
    return Comparison(out, models, files, agreement)


def _write_csv(path: Path, rows: list[list[str]]) -> Path:
    import csv

    return atomic_write(path, lambda f: csv.writer(f).writerows(rows), newline="")
