"""``report.html`` of a model comparison (runners/compare.py): the atlas figure, Table 1 (concepts × models),
the agreement between models per domain and channel, and which of the paper's findings hold in which model."""
from __future__ import annotations

import csv
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from medinterp.io import parse_cell
from medinterp.report import html as h
from medinterp.report.common import REPORT_NAME, footer, header, load_json, pngs, when, write_page

TABLE1_NOTE = ("Best value [95 % CI] of each concept per model, at read-out L and relative depth L / n_layers "
               "(0 = embeddings, 1 = the last block). A dash says why a model has no value. See docs/atlas.md.")
AGREEMENT_NOTE = ("Per domain and channel, each pair of models: the interval Jaccard of their selected layers on "
                  "relative depth (1 = the same depths, 0 = disjoint, — = neither selected a layer) and Spearman's "
                  "ρ of their raw curves resampled to a common depth grid, with a bootstrap 95 % CI.")


def _cell(c: Mapping[str, Any]) -> str:
    if c["layer"] is None:
        return f'<span class="note">— {h.text(c["note"])}</span>'
    out = f'{h.num(c["value"])} {h.ci(c["ci_low"], c["ci_high"])} L{c["layer"]} ({c["depth"]:.2f})'
    if c["labeling"]:
        out += f' <span class="note">{h.text(c["labeling"])}</span>'
    if c["note"]:
        out += f' <span class="note">⚠ {h.text(c["note"])}</span>'
    return out


def table1_section(path: Path) -> str:
    """table1.csv as concepts × models."""
    with open(path, encoding="utf-8", newline="") as f:
        rows = list(csv.DictReader(f))
    cells = [{k: parse_cell(v) for k, v in r.items()} for r in rows]
    for c in cells:
        c["note"], c["labeling"] = c["note"] or "", c["labeling"] or ""
    models = sorted({str(c["model"]) for c in cells})
    concepts = list(dict.fromkeys(str(c["concept"]) for c in cells))
    by = {(str(c["concept"]), str(c["model"])): c for c in cells}
    layers = {str(c["model"]): c["n_layers"] for c in cells}
    body = [[h.text(name)] + [_cell(by[(name, m)]) for m in models] for name in concepts]
    return h.table(["concept", *(f"{m} ({layers[m]} layers)" for m in models)], body, note=h.text(TABLE1_NOTE),
                   cls="num")


def _rho(s: Mapping[str, Any] | None) -> str:
    if not s:
        return "—"
    return f'{h.num(s["value"])} {h.ci(s["ci_low"], s["ci_high"])}' if s["value"] is not None else "—"


def agreement_section(agreement: Mapping[str, Any]) -> str:
    """One row per (domain, channel, pair of models)."""
    rows = [[h.text(d), h.text(ch), h.text(f'{p["a"]} vs {p["b"]}'), h.num(p["jaccard"]), _rho(p["spearman"])]
            for d, e in agreement["domains"].items() for ch, c in e["channels"].items() for p in c["pairs"]]
    if not rows:
        return f'<p class="note">{h.text(agreement.get("note") or "no domain mapped by two models")}</p>'
    return h.table(["domain", "channel", "models", "interval Jaccard", "Spearman ρ [95 % CI]"], rows,
                   note=h.text(AGREEMENT_NOTE), cls="num", tall=True)


def findings_section(found: Mapping[str, Any]) -> str:
    """Findings × models: verdict, value [CI] at layer (depth), and the detail."""
    models = found["models"]
    rows = []
    for r in found["rows"]:
        row = [h.text(r["finding"])]
        for m in models:
            v = r[m]
            where = "" if v["layer"] is None else f' L{v["layer"]} ({v["depth"]:.2f})'
            value = "" if v["value"] is None else f' {h.num(v["value"])} {h.ci(v["ci_low"], v["ci_high"])}'
            row.append(f'<b>{h.text(v["holds"])}</b>{value}{where}<br><span class="note">{h.text(v["detail"])}</span>')
        rows.append(row)
    return h.table(["finding", *models], rows, note="Verdicts: yes / no / partial / n/a (not run). docs/atlas.md.")


def atlas_page(folder: Path) -> str:
    agreement = load_json(folder / "agreement.json")
    figures = {p.name: p for p in pngs(folder)}
    models = agreement["models"]
    facts = {"folder": folder.name, "compared": when(folder / "agreement.json"),
             "models": ", ".join(f"{m} ({e['n_layers']} layers)" for m, e in models.items()),
             "shared domains": ", ".join(agreement["shared_domains"]) or "none"}
    atlas = figures.pop("atlas.png", None)
    sections = [h.Section("table1", "Table 1", table1_section(folder / "table1.csv")),
                h.Section("atlas", "Atlas", h.figure(atlas) if atlas else '<p class="note">no figure (plots=false)</p>'),
                h.Section("agreement", "Agreement between models", agreement_section(agreement)),
                h.Section("findings", "Findings per model", findings_section(agreement["findings"]))]
    setup = h.details("Definitions", h.json_view(agreement["definitions"]))
    setup += h.details("Map parameters", h.json_view(h.redact(agreement["map_params"])))
    setup += h.details(f"Sources ({len(agreement['sources'])} per_layer tables)", h.json_view(agreement["sources"]))
    sections.append(h.Section("setup", "Definitions, parameters and sources", setup))
    return h.page("medinterp · atlas · " + ", ".join(models), header("Atlas · " + " vs ".join(models), facts),
                  sections, footer())


def write_atlas_report(folder: str | Path) -> Path:
    """Write ``<folder>/report.html`` (atomically) and return its path."""
    folder = Path(folder)
    return write_page(folder / REPORT_NAME, atlas_page(folder))
