"""Readable tables of a knowledge map (knowledge_map.json) and of the findings (findings.json).

``findings_rows`` turns the nested findings dict of :func:`medinterp.maps.findings.findings` into one row
per claim — finding, what, layer, value, 95 % CI, null, verdict, and whether its verdict holds across the
settings of a robustness sweep (``stable``) — so a reader sees at a glance which findings hold and where; ``map_rows`` gives one row per domain with each method's selected layers and
the consensus. Both return cells that are already safe HTML.
"""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from medinterp.report.html import ci, intervals, layer_ranges, num, text

FINDINGS_HEADERS = ("finding", "what", "layer", "value", "95 % CI", "null", "verdict", "stable")
NAMES = {"age_step": "age 17→18 step", "progression_circularity": "progression circularity",
         "drugs_specialty_vs_mechanism": "drugs: specialty − mechanism", "collapse": "activation collapse",
         "explained_by_spelling": "clustering explained by spelling"}


def _row(finding: str, what: str, p: Mapping[str, Any] | None, null: str, verdict: str) -> list[str]:
    p = p or {}
    return [text(finding), text(what), num(p.get("layer")), num(p.get("value")), ci(p.get("ci_low"), p.get("ci_high")),
            null, text(verdict)]


def _verdict(excludes: bool | None, null: float) -> str:
    return {True: f"CI excludes {null:g}", False: f"CI includes {null:g}"}.get(excludes, "no CI")


def _age(f: Mapping[str, Any]) -> list[list[str]]:
    name = NAMES["age_step"]
    peak = f["peak"]
    out = [_row(name, "age/pooled (peak)", peak, num(f["null"]), _verdict(peak.get("excludes_null"), f["null"]))]
    out += [_row(name, f"{lab} at the peak layer", p, num(f["null"]), "") for lab, p in f.get("at_peak", {}).items() if p]
    g = f.get("gender_difference") or {}
    if g.get("available"):
        where = g["layers_excluding_null"]
        out.append(_row("age step: female − male", "at the peak layer", g.get("at_peak"), num(g["null"]),
                        f"CI excludes 0 at layers {layer_ranges(where)}" if where else "CI includes 0 at every layer"))
    elif g:
        out.append(_row("age step: female − male", "—", None, "—", _missing(g)))
    return out


def _progression(f: Mapping[str, Any]) -> list[list[str]]:
    name, out = NAMES["progression_circularity"], []
    for disease, d in f["diseases"].items():
        if d.get("best_layer") is None:
            out.append(_row(name, disease, None, "—", _missing(d)))
            continue
        for metric in ("circular_corr", "circular_r2_gain", "closure_ratio"):
            m = d.get(metric)
            if m is None:
                continue
            null = m.get("null")
            band = ci(null.get("ci_low"), null.get("ci_high")) if null else "—"
            null_html = "—" if not null else num(null.get("value")) + ("" if band == "—" else f" {band}")
            verdict = {True: "beats the null", False: "does not beat the null"}.get(m.get("beats_null"), "no null")
            better = "higher" if m.get("more_circular_when") == "higher" else "lower"
            out.append(_row(name, f"{disease}: {metric} ({better} = more circular)", m, null_html, verdict))
    return out


def _drugs(f: Mapping[str, Any]) -> list[list[str]]:
    out = []
    for metric, m in f["metrics"].items():
        where = m["layers_excluding_null"]
        verdict = f"{m['sign']}; CI excludes 0 at layers {layer_ranges(where)}" if where else "CI includes 0 everywhere"
        spelled = {side: layers for side, layers in (m.get("explained_by_spelling") or {}).items() if layers}
        if spelled:
            verdict += "; " + "; ".join(f"{side} clustering explained by spelling at layers {layer_ranges(layers)}"
                                        for side, layers in spelled.items())
        out.append(_row(NAMES["drugs_specialty_vs_mechanism"], f"{metric} (largest |difference|)", m["peak"],
                        num(m["null"]), verdict))
    return out


def _collapse(f: Mapping[str, Any]) -> list[list[str]]:
    name, out, quiet = NAMES["collapse"], [], []
    null = f"&lt; {num(f['fraction'])} × running max"
    for curve, c in f["curves"].items():
        for ep in c["episodes"]:
            confirms = {True: "; trough CI below threshold", False: "; trough CI reaches threshold"}.get(
                ep.get("ci_confirms"), "")
            out.append(_row(name, curve, {"layer": ep["trough_layer"], "value": ep["trough"]}, null,
                            f"collapse at layer {ep['collapse_layer']} (max {ep['reference']:.3g} at layer "
                            f"{ep['reference_layer']}), recovered at layer {ep['recovery_layer']}{confirms}"))
        if c.get("unrecovered"):
            u = c["unrecovered"]
            out.append(_row(name, curve, {"layer": u["trough_layer"], "value": u["trough"]}, null,
                            f"drop from layer {u['collapse_layer']} without recovery (not a collapse)"))
        if not c["episodes"] and not c.get("unrecovered"):
            quiet.append(curve)
    if quiet:
        out.append(_row(name, ", ".join(quiet), None, null, "no collapse"))
    return out


def _spelling(f: Mapping[str, Any]) -> list[list[str]]:
    name, out, clean = NAMES["explained_by_spelling"], [], []
    for labeling, e in f["labelings"].items():
        flagged = {m: e[m] for m in ("silhouette_umap", "silhouette_raw") if e.get(m)}
        if not flagged:
            clean.append(labeling)
            continue
        verdict = "; ".join(f"{m} at layers {layer_ranges(layers)}" for m, layers in flagged.items())
        out.append(_row(name, f"{labeling}: spelling control (layer −1)", e["surface"], "—",
                        f"explained_by_spelling: {verdict}"))
    if clean:
        out.append(_row(name, ", ".join(clean), None, "—", "no layer explained by spelling"))
    return out


def stability_cell(f: Mapping[str, Any]) -> str:
    """The ``stable`` column: yes / NO with the settings that disagree / — without a robustness sweep."""
    stable = f.get("stable")
    if stable is None:
        return f'<span class="note">— {text(f.get("stable_note") or "no robustness sweep")}</span>'
    if stable:
        return "yes" + (f' <span class="note">{text(f["stable_note"])}</span>' if f.get("stable_note") else "")
    return f"<b>NO</b>: {text(', '.join(map(str, f.get('disagreeing_settings') or [])))} disagree"


def _missing(f: Mapping[str, Any]) -> str:
    return "not available" + (f" (missing: {', '.join(f['missing'])})" if f.get("missing") else "")


def findings_rows(found: Mapping[str, Any]) -> list[list[str]]:
    """One row per claim of a findings dict (see the module docstring); unavailable findings say what is missing."""
    makers = {"age_step": _age, "progression_circularity": _progression, "drugs_specialty_vs_mechanism": _drugs,
              "collapse": _collapse, "explained_by_spelling": _spelling}
    out = []
    for key, make in makers.items():
        f = found.get(key)
        if f is None:
            continue
        rows = make(f) if f.get("available") else [_row(NAMES[key], "—", None, "—", _missing(f))]
        out += [row + [stability_cell(f)] for row in rows]
    return out


def map_headers(kmap: Mapping[str, Any]) -> list[str]:
    return ["domain", *_methods(kmap), "consensus"]


def _methods(kmap: Mapping[str, Any]) -> list[str]:
    listed = list(kmap.get("params", {}).get("methods", []))
    seen = [m for e in kmap["domains"].values() for m in e if m != "consensus"]
    return list(dict.fromkeys(listed + seen))


def map_rows(kmap: Mapping[str, Any]) -> list[list[str]]:
    """Per domain: each method's selected layers (with its metric) and the consensus layers."""
    missing = {(m["domain"], m["method"]): m["reason"] for m in kmap.get("missing", [])}
    absent = [d for d in kmap.get("params", {}).get("domains", []) if d not in kmap["domains"]]
    rows = []
    for domain, entries in [*kmap["domains"].items(), *((d, {}) for d in absent)]:
        row = [f"<b>{text(domain)}</b>"]
        for method in _methods(kmap):
            e = entries.get(method)
            if e is None:
                row.append(f'<span class="note">— {text(missing.get((domain, method), "no data"))}</span>')
            else:
                row.append(f'{text(intervals(e["intervals"]))} <span class="note">{text(e.get("metric", ""))}</span>')
        row.append(f"<b>{text(intervals(entries.get('consensus', [])))}</b>")
        rows.append(row)
    return rows
