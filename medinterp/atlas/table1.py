"""Table 1 of the paper: per concept and model, the best value with its CI, its layer and its relative depth.

A **concept** is one metric of one method on one domain and labeling (fnmatch pattern), read in one
direction (``max``: higher is more knowledge; ``min``: lower). For each model, its best row is the one with
the best finite value among the matching rows at read-outs ``layer ≥ 0`` (baselines at −1 never count; a
NaN row — degenerate, withheld — never wins). Ties go to the shallowest layer, then the first labeling by
name. The cell keeps that row's CI, ``n`` and ``note`` (``explained_by_spelling: ...`` stays visible), and
adds ``depth = layer / n_layers`` (medinterp/atlas/depth.py). A model without any matching finite row gets a
NaN cell whose note says what was missing — never a silent blank.

The paper's concepts (:data:`PAPER_CONCEPTS`): age R² (``r2_raw`` on ``age/pooled``), the symptom and
disease silhouettes (``silhouette_umap`` on ``system`` / ``chapter``), the drug silhouettes by mechanism and
by specialty, progression circularity (``circular_corr``, best over the ``stage/<disease>`` labelings) and
dosage patching P (``p_resid_diff`` on ``pairs``). More come from the command line as
``domain:method:metric[:labeling[:min]]`` (:func:`parse_concept`).
"""
from __future__ import annotations

import fnmatch
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

from medinterp.errors import MedinterpError, unknown_choice
from medinterp.results import Row

DIRECTIONS = ("max", "min")
COLUMNS = ("concept", "model", "n_layers", "value", "ci_low", "ci_high", "layer", "depth", "labeling", "n", "note",
           "domain", "method", "metric")


@dataclass(frozen=True)
class Concept:
    """One row of Table 1: which rows to read, and which direction is better."""

    name: str
    domain: str
    method: str
    metric: str
    labeling: str = "*"  # fnmatch pattern over the labeling column
    best: str = "max"

    def __post_init__(self) -> None:
        if self.best not in DIRECTIONS:
            raise unknown_choice(f"direction of concept {self.name!r}:", self.best, DIRECTIONS)

    def matches(self, r: Row) -> bool:
        return (r.domain == self.domain and r.method == self.method and r.metric == self.metric
                and fnmatch.fnmatchcase(r.labeling, self.labeling))

    def where(self) -> str:
        return f"{self.domain}/{self.method}/{self.metric} on {self.labeling}"


PAPER_CONCEPTS: tuple[Concept, ...] = (
    Concept("age R²", "age", "umap", "r2_raw", "age/pooled"),
    Concept("symptoms silhouette", "symptoms", "umap", "silhouette_umap", "system"),
    Concept("disease silhouette", "disease", "umap", "silhouette_umap", "chapter"),
    Concept("drugs silhouette by mechanism", "drugs", "umap", "silhouette_umap", "mechanism"),
    Concept("drugs silhouette by specialty", "drugs", "umap", "silhouette_umap", "specialty"),
    Concept("progression circularity", "progression", "umap", "circular_corr", "stage/*"),
    Concept("dosage patching P", "dosage", "patching", "p_resid_diff", "pairs"),
)


def parse_concept(spec: str | Mapping[str, Any]) -> Concept:
    """A concept from ``domain:method:metric[:labeling[:max|min]]`` (name = the spec) or a mapping of its fields."""
    if isinstance(spec, Mapping):
        try:
            return Concept(**spec)
        except TypeError:
            raise MedinterpError(f"concept {dict(spec)!r}: fields are name, domain, method, metric, labeling, best") from None
    parts = str(spec).split(":")
    if not 3 <= len(parts) <= 5 or not all(parts[:3]):
        raise MedinterpError(f"concept {spec!r}: write domain:method:metric[:labeling[:max|min]], "
                             "e.g. age:umap:anisotropy:age/pooled")
    domain, method, metric = parts[:3]
    labeling = parts[3] if len(parts) > 3 and parts[3] else "*"
    best = parts[4] if len(parts) > 4 else "max"
    return Concept(str(spec), domain, method, metric, labeling, best)


def concepts_from(extra: Iterable[str | Mapping[str, Any]] = (), paper: bool = True) -> list[Concept]:
    """The paper's concepts (unless ``paper`` is false) followed by ``extra``; a name used twice is an error."""
    out = list(PAPER_CONCEPTS if paper else ()) + [parse_concept(c) for c in extra]
    names = [c.name for c in out]
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise MedinterpError(f"Table 1 lists concept {twice[0]!r} twice")
    if not out:
        raise MedinterpError("Table 1 has no concept: keep the paper's (table1.paper=true) or name some in table1.extra")
    return out


@dataclass(frozen=True)
class Cell:
    """The best value of one concept in one model (a row of table1.csv)."""

    concept: str
    model: str
    n_layers: int
    value: float
    ci_low: float
    ci_high: float
    layer: int | None
    depth: float
    labeling: str
    n: int
    note: str
    domain: str
    method: str
    metric: str

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _key(c: Concept):
    sign = -1.0 if c.best == "max" else 1.0
    return lambda r: (sign * r.value, r.layer, r.labeling)


def best_cell(concept: Concept, model: str, rows: Sequence[Row], n_layers: int) -> Cell:
    """The best row of ``concept`` among ``rows`` (one model's), as a :class:`Cell` (see the module docstring)."""
    nan = float("nan")
    matching = [r for r in rows if concept.matches(r) and r.layer >= 0]
    finite = [r for r in matching if math.isfinite(r.value)]
    base = dict(concept=concept.name, model=model, n_layers=n_layers, domain=concept.domain, method=concept.method,
                metric=concept.metric)
    if not finite:
        why = (f"all {len(matching)} rows NaN ({matching[0].note or 'no note'})" if matching
               else f"no rows: {concept.where()}")
        return Cell(**base, value=nan, ci_low=nan, ci_high=nan, layer=None, depth=nan, labeling="", n=0, note=why)
    r = min(finite, key=_key(concept))
    return Cell(**base, value=r.value, ci_low=r.ci_low, ci_high=r.ci_high, layer=r.layer, depth=r.layer / n_layers,
                labeling=r.labeling, n=r.n, note=r.note)


def table1(rows_by_model: Mapping[str, Sequence[Row]], n_layers: Mapping[str, int],
           concepts: Sequence[Concept] = PAPER_CONCEPTS) -> list[Cell]:
    """Every (concept, model) cell, concepts in the given order, models sorted by name."""
    return [best_cell(c, m, rows_by_model[m], n_layers[m]) for c in concepts for m in sorted(rows_by_model)]


def _fmt(v: float, digits: int = 3) -> str:
    return "" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.{digits}g}" if isinstance(v, float) else str(v)


def csv_rows(cells: Sequence[Cell]) -> list[list[str]]:
    """table1.csv: :data:`COLUMNS`, then one row per cell (NaN as an empty cell; floats in full)."""
    def cell(v: Any) -> str:
        if v is None or (isinstance(v, float) and math.isnan(v)):
            return ""
        return repr(v) if isinstance(v, float) else str(v)
    return [list(COLUMNS)] + [[cell(getattr(c, k)) for k in COLUMNS] for c in cells]


def markdown(cells: Sequence[Cell], concepts: Sequence[Concept] = PAPER_CONCEPTS) -> str:
    """table1.md: concepts as rows, models as columns; a cell reads ``value [ci_low, ci_high] Lℓ (depth)``,
    plus the labeling where the concept's pattern has a wildcard (``stage/parkinsons``) and ``⚠ note``."""
    models = sorted({c.model for c in cells})
    names = list(dict.fromkeys(c.concept for c in cells))
    wild = {c.name for c in concepts if any(ch in c.labeling for ch in "*?[")}
    by = {(c.concept, c.model): c for c in cells}
    n_layers = {c.model: c.n_layers for c in cells}
    lines = ["| concept | " + " | ".join(f"{m} ({n_layers[m]} layers)" for m in models) + " |",
             "|" + "---|" * (len(models) + 1)]
    for name in names:
        parts = []
        for m in models:
            c = by[(name, m)]
            if c.layer is None:
                parts.append(f"— ({c.note})")
                continue
            ci = f" [{_fmt(c.ci_low)}, {_fmt(c.ci_high)}]" if math.isfinite(c.ci_low) and math.isfinite(c.ci_high) else ""
            text = f"{_fmt(c.value)}{ci} L{c.layer} ({c.depth:.2f})"
            text += f" {c.labeling}" if name in wild else ""
            text += f" ⚠ {c.note}" if c.note else ""
            parts.append(text.replace("|", "/"))
        lines.append(f"| {name} | " + " | ".join(parts) + " |")
    lines += ["", "Cells: best value [95 % CI] at read-out L (relative depth L / n_layers); ⚠ the row's note; "
              "— no finite value (why in brackets)."]
    return "\n".join(lines) + "\n"
