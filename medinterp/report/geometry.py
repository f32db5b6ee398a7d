"""The geometry section of a ``method=geometry`` run's report.html: what each token set is, the sample sizes, each
metric family's values at the first, middle and last read-out, and every note (why a value is NaN or needs care).

Read from the run's own files only (per_layer.csv rows, summary.json's ``method_summary``); definitions in
docs/geometry.md.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from medinterp.report import html as h
from medinterp.results import Row

DOC = "docs/geometry.md"


def geometry_section(rows: Sequence[Row], summary: Mapping[str, Any]) -> str:
    """The section's HTML (empty for other methods)."""
    if summary.get("method") != "geometry":
        return ""
    from medinterp.methods.geometry import FAMILIES

    ms = summary.get("method_summary") or {}
    parts = [f'<p class="note">Definitions, centring, token sets, CIs and sources: {h.text(DOC)}.</p>']
    labelings = ms.get("labelings") or {}
    if labelings:
        sample = (f"{h.num(ms.get('sampled_rows'))} of {h.num(ms.get('all_rows'))} tokens per layer "
                  f"(max_rows {h.num(ms.get('max_rows'))}); logit lens on {h.num(ms.get('lens_prompts'))} of "
                  f"{h.num(ms.get('prompts'))} prompts; {h.num(ms.get('contexts_per_term'))} contexts (templates) "
                  "per term.")
        parts.append("<h3>Token sets (the labeling column)</h3>" + h.table(
            ["labeling", "rows"], [[h.text(k), h.text(v)] for k, v in labelings.items()], note=h.text(sample)))
    layers = sorted({r.layer for r in rows if r.layer >= 0})
    if layers:
        shown = sorted({layers[0], layers[len(layers) // 2], layers[-1]})
        index = {(r.labeling, r.metric, r.layer): r for r in rows}
        keys = sorted({(r.labeling, r.metric) for r in rows}, key=lambda k: _order(FAMILIES, k[1]))
        body = [[h.text(_family(FAMILIES, metric)), h.text(metric), h.text(labeling),
                 *(_cell(index.get((labeling, metric, layer))) for layer in shown)] for labeling, metric in keys]
        parts.append("<h3>By metric family</h3>" + h.table(
            ["family", "metric", "labeling", *(f"read-out {layer}" for layer in shown)], body, cls="num",
            note="Value [95 % CI]; — where the value is undefined (see the notes)."))
    notes = ms.get("notes") or {}
    if notes:
        parts.append("<h3>Notes</h3>" + h.table(
            ["labeling/metric", "note", "read-outs"],
            [[h.text(key), h.text(note), h.text(h.layer_ranges(layers))] for key, by_note in notes.items()
             for note, layers in by_note.items()], tall=True))
    return "".join(parts)


def _order(families: Mapping[str, Sequence[str]], metric: str) -> int:
    flat = [m for ms in families.values() for m in ms]
    return flat.index(metric) if metric in flat else len(flat)


def _family(families: Mapping[str, Sequence[str]], metric: str) -> str:
    return next((f.replace("_", " ") for f, ms in families.items() if metric in ms), "")


def _cell(r: Row | None) -> str:
    if r is None:
        return "—"
    ci = h.ci(r.ci_low, r.ci_high)
    return h.num(r.value) + ("" if ci == "—" else f" {ci}")
