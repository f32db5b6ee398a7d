"""``report.html`` of one model's synthesis folder (``<out>/<model>/`` from runners/synthesize.py).

The knowledge map (figure and a domain × method table of selected layers with the consensus), the
findings (a table of every claim with its CI, null and verdict, and the findings figure), any other
figure in the folder, the map and findings parameters (collapsed), and which per_layer tables fed it.
"""
from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from medinterp.report import html as h
from medinterp.report.common import REPORT_NAME, footer, header, load_json, pngs, when, write_page
from medinterp.maps.specificity import specificity_summary
from medinterp.report.tables import FINDINGS_HEADERS, findings_rows, intervals, map_headers, map_rows

MAP_NOTE = ("Selected layers per method as closed read-out ranges (0 = embeddings, l = output of block l); "
            "the small text is the metric the method contributed. Consensus: layers selected by at least "
            "{min_methods} methods. See docs/knowledge-map.md.")


def map_section(kmap: Mapping[str, Any], png: Path | None) -> str:
    """The knowledge map's figure (if any) and table."""
    note = h.text(MAP_NOTE.format(min_methods=kmap.get("params", {}).get("min_methods", "min_methods")))
    body = h.figure(png) if png else ""
    body += h.table(map_headers(kmap), map_rows(kmap), note=note)
    interpolated = [f"{d}/{m}: {e['interpolated_layers']}" for d, es in kmap["domains"].items()
                    for m, e in es.items() if isinstance(e, Mapping) and e.get("interpolated_layers")]
    if interpolated:
        body += f'<p class="note">Interpolated layers: {h.text("; ".join(interpolated))}</p>'
    nan = [f"{d}/{m}: " + ", ".join(f"{layer} ({note})" for layer, note in e["nan_layers"].items())
           for d, es in kmap["domains"].items() for m, e in es.items() if isinstance(e, Mapping) and e.get("nan_layers")]
    if nan:
        body += f'<p class="note">Layers with no value (NaN, not used as numbers): {h.text("; ".join(nan))}</p>'
    return body


def findings_section(found: Mapping[str, Any], png: Path | None) -> str:
    """The findings table and figure."""
    body = h.table(FINDINGS_HEADERS, findings_rows(found), cls="num",
                   note="Layers are read-out indices; CIs are bootstrap 95 % intervals. See docs/knowledge-map.md.")
    return body + (h.figure(png) if png else "")


SPECIFICITY_NOTE = ("Each lane of saliency, ablation and patching in two views: absolute (the method's own curve) and "
                    "specificity (z-scored domain curve minus z-scored control curve; docs/validity.md). The map's "
                    "lanes use the view in the 'map uses' column (map.contrast). Generic overlap: Jaccard index of the "
                    "absolute lane with the control's lane (1 = the same layers for any text). Specific layers: "
                    "read-outs whose specificity band lies above 0.")


def specificity_section(kmap: Mapping[str, Any]) -> str:
    """The specificity view of every lane that has one (empty when the map had no control run)."""
    summary = specificity_summary(kmap)
    if not summary["available"]:
        return ""
    rows = [[f"<b>{h.text(d)}</b>", h.text(m), h.text(e["view"]), h.text(intervals(e["absolute"])),
             h.text(intervals(e["specificity"])), h.text(intervals(e["control_lane"])),
             "—" if e["generic_overlap"] is None else f"{e['generic_overlap']:.2f}",
             h.text(", ".join(map(str, e["specific_layers"])) or "none"), h.text(e["verdict"])]
            for d, es in summary["lanes"].items() for m, e in es.items()]
    return h.table(["domain", "method", "map uses", "absolute lane", "specificity lane",
                    f"{summary['control']} lane", "generic overlap", "specific layers", "domain-specific"],
                   rows, note=SPECIFICITY_NOTE)


def _sources(kmap: Mapping[str, Any]) -> str:
    rows = [[h.text(d), h.text(m), h.text(e["source"])] for d, es in kmap["domains"].items()
            for m, e in es.items() if isinstance(e, Mapping) and e.get("source")]
    return h.table(["domain", "method", "per_layer table"], rows) if rows else ""


def map_page(model_dir: Path) -> str:
    """The HTML of ``model_dir``'s report."""
    kmap = load_json(model_dir / "knowledge_map.json")
    found = load_json(model_dir / "findings.json") if (model_dir / "findings.json").is_file() else None
    figures = {p.name: p for p in pngs(model_dir)}
    model = kmap.get("model", model_dir.name)
    params = kmap.get("params", {})
    facts = {"folder": model_dir.name, "synthesised": when(model_dir / "knowledge_map.json"),
             "read-outs": f"0–{kmap.get('n_layers', '?')}", "domains": ", ".join(kmap["domains"]) or "none",
             "methods": ", ".join(params.get("methods", [])) or "—"}
    sections = [h.Section("map", "Knowledge map", map_section(kmap, figures.pop("knowledge_map.png", None)))]
    spec = specificity_section(kmap)
    if spec:
        sections.append(h.Section("specificity", "Specificity view (domain vs control)", spec))
    if found is not None:
        sections.append(h.Section("findings", "Findings", findings_section(found, figures.pop("findings.png", None))))
    if figures:
        sections.append(h.Section("figures", "Other figures", "".join(h.figure(p) for p in figures.values())))
    setup = h.details("Map parameters", f"<pre>{h.text(yaml.safe_dump(h.redact(params), sort_keys=False))}</pre>")
    if found is not None and found.get("params"):
        setup += h.details("Findings parameters",
                           f"<pre>{h.text(yaml.safe_dump(h.redact(found['params']), sort_keys=False))}</pre>")
    setup += "<h3>Sources</h3>" + (_sources(kmap) or '<p class="note">none recorded</p>')
    sections.append(h.Section("setup", "Parameters and sources", setup))
    return h.page(f"medinterp · knowledge map · {model}", header(f"Knowledge map · {model}", facts), sections, footer())


def write_map_report(model_dir: str | Path) -> Path:
    """Write ``<model_dir>/report.html`` (atomically) and return its path."""
    model_dir = Path(model_dir)
    return write_page(model_dir / REPORT_NAME, map_page(model_dir))
