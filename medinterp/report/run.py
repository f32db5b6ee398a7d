"""``report.html`` of one method run folder (per_layer.csv, summary.json, figures from runners/map.py).

Top to bottom: a header (model, domain, method, when, prompt set, read-out), key numbers and the best
layer per metric, the per-layer curves with CI bands (inline SVG, one small multiple per labeling ×
metric, from per_layer.csv), for ``method=geometry`` its own section (token sets, values by metric family,
notes; medinterp/report/geometry.py), every PNG of the folder (UMAP grids, curves, ...), the findings that the
run's own rows support (medinterp.maps.findings), label counts and the method's summary, then the
resolved config (collapsed, secrets redacted), versions, model and timings.
"""
from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from medinterp.errors import MedinterpError
from medinterp.maps.findings import findings
from medinterp.report import html as h
from medinterp.report.common import REPORT_NAME, footer, header, pngs, when, write_page
from medinterp.report.geometry import geometry_section
from medinterp.report.svg import LEGEND, panel_svg, panels
from medinterp.report.tables import FINDINGS_HEADERS, findings_rows
from medinterp.results import Row, read_run


def _key(value: str, label: str) -> str:
    return f'<div class="key"><div class="v">{value}</div><div class="l">{h.text(label)}</div></div>'


def _key_numbers(summary: Mapping[str, Any], rows: list[Row]) -> str:
    """Cards (points, rows, layers, time) and the best-layer table (nulls left out)."""
    model = summary.get("model") or {}
    total = (summary.get("timings") or {}).get("total_s")
    cards = [_key(h.num(summary.get("n_points")), "points (prompts)"), _key(h.num(len(rows)), "per-layer rows"),
             _key(h.num(model.get("n_layers")), "blocks"),
             _key(f"{total:.0f} s" if isinstance(total, (int, float)) else "—", "total time")]
    best = [b for b in summary.get("best_layers", []) if not str(b.get("metric", "")).endswith("_null")]
    body = f'<div class="keys">{"".join(cards)}</div>'
    if best:
        body += "<h3>Best layer per metric</h3>" + h.table(
            ["labeling", "metric", "layer of max", "value", "95 % CI"],
            [[h.text(b["labeling"]), h.text(b["metric"]), h.num(b["layer"]), h.num(b["value"]),
              h.ci(b.get("ci_low"), b.get("ci_high"))] for b in best],
            note="The layer with the largest value (layers ≥ 0). Shuffled-null metrics are left out.", cls="num")
    base = [r for r in rows if r.layer < 0]
    if base:
        body += "<h3>Layer-independent baselines (layer −1)</h3>" + h.table(
            ["labeling", "metric", "value", "95 % CI", "n"],
            [[h.text(r.labeling), h.text(r.metric), h.num(r.value), h.ci(r.ci_low, r.ci_high), h.num(r.n)] for r in base],
            cls="num")
    return body


def _judge_coverage(summary: Mapping[str, Any]) -> str:
    """The judge's coverage (ablation: ``judge_coverage`` per layer, ``degraded``); empty for other methods."""
    ms = summary.get("method_summary") or {}
    if not isinstance(ms.get("judge_coverage"), Mapping) or "degraded" not in ms:
        return ""
    sent, answered = ms.get("judge_sent", 0), ms.get("judge_answered", 0)
    withheld = ms.get("judge_withheld_layers") or []
    line = (f"Judge {h.text(ms.get('judge', '?'))}: answered {h.num(answered)} of the {h.num(sent)} items sent to it "
            f"(identical answers are not sent) · <b>degraded: {'yes' if ms['degraded'] else 'no'}</b>")
    if not ms["degraded"]:
        return f'<h3>Judge coverage</h3><p class="note">{line}.</p>'
    body = (f'<h3>Judge coverage: degraded</h3><p><b>Degraded run</b>: {line}. judge_score is NaN (withheld) for '
            f"layers {h.text(h.layer_ranges(withheld))}: below min_judge_coverage "
            f"{h.num(ms.get('min_judge_coverage'))}.</p>")
    return body + h.table(["layer", "judge coverage"], [[h.text(layer), h.num(value)]
                                                         for layer, value in ms["judge_coverage"].items()], cls="num")


def _curves(rows: list[Row], summary: Mapping[str, Any]) -> str:
    """Small multiples grouped by labeling."""
    if not rows:
        note = (summary.get("method_summary") or {}).get("note", "")
        return f'<p class="note">No per-layer rows{": " + h.text(note) if note else "."}</p>'
    by_labeling: dict[str, list[str]] = defaultdict(list)
    for p in panels(rows):
        by_labeling[p.labeling].append(panel_svg(p))
    if not by_labeling:
        return '<p class="note">Only layer-independent baselines: see the key numbers.</p>'
    return LEGEND + "".join(f'<h3>{h.text(lab)}</h3><div class="grid">{"".join(svgs)}</div>'
                            for lab, svgs in by_labeling.items())


def _findings(rows: list[Row]) -> str:
    """The findings this run's rows alone support (none: empty)."""
    if not rows or len({r.model for r in rows}) != 1:
        return ""
    found = {k: v for k, v in findings(rows).items() if isinstance(v, dict) and v.get("available")}
    table_rows = findings_rows(found)
    if not table_rows:
        return ""
    return h.table(FINDINGS_HEADERS, table_rows, cls="num",
                   note="From this run's rows only; the knowledge-map report combines all runs of a model.")


def _labels(summary: Mapping[str, Any]) -> str:
    parts = []
    counts = summary.get("label_counts") or {}
    if counts:
        parts.append("<h3>Points per label</h3>" + h.table(
            ["labeling", "labels (points)"],
            [[h.text(lab), ", ".join(f"{h.text(k)} ({h.num(v)})" for k, v in c.items()) if isinstance(c, Mapping)
              else h.num(c)] for lab, c in counts.items()]))
    if summary.get("method_summary"):
        parts.append("<h3>Method summary</h3>" + h.json_view(summary["method_summary"]))
    return "".join(parts)


def _setup(summary: Mapping[str, Any], config: Mapping[str, Any] | None) -> str:
    """Config (collapsed), versions, model, prompt set, timings."""
    parts = []
    if config is not None:
        cfg = yaml.safe_dump(h.redact(config), sort_keys=False, allow_unicode=True, width=120)
        parts.append(h.details("Resolved config (secrets redacted)", f"<pre>{h.text(cfg)}</pre>"))
    if summary.get("versions"):
        parts.append("<h3>Versions</h3>" + h.table(["package", "version"],
                                                    [[h.text(k), h.text(v)] for k, v in summary["versions"].items()]))
    for key, title in (("model", "Model"), ("prompt_set", "Prompt set")):
        if isinstance(summary.get(key), Mapping):
            parts.append(f"<h3>{title}</h3>" + h.json_view(summary[key]))
    timings = summary.get("timings") or {}
    if timings:
        parts.append("<h3>Timings</h3>" + h.table(
            ["step", "seconds"], [[h.text(k), h.num(v)] for k, v in timings.items()], cls="num"))
    return "".join(parts)


def run_page(run_dir: Path) -> str:
    """The HTML of ``run_dir``'s report."""
    if not (run_dir / "summary.json").is_file():
        raise MedinterpError(f"report: no summary.json in '{run_dir}'")
    try:
        run = read_run(run_dir)
    except MedinterpError as err:
        raise MedinterpError(f"report: {err}") from None
    summary, rows, csv_path = run.summary, run.rows, run_dir / "per_layer.csv"
    model = (summary.get("model") or {}).get("name") or next((r.model for r in rows), "?")
    domain, method = summary.get("domain", "?"), summary.get("method", "?")
    title = f"{model} · {domain} · {method}"
    facts = {"run": run_dir.name, "results written": when(csv_path),
             "prompt set": (summary.get("prompt_set") or {}).get("key", "—"),
             "templates": ", ".join(map(str, summary.get("templates") or [])) or "—",
             "read-out": summary.get("reduction", "—"),
             "device": (summary.get("model") or {}).get("device", "—"),
             "versions": ", ".join(f"{k} {v}" for k, v in (summary.get("versions") or {}).items()
                                   if k in ("medinterp", "torch", "transformers")) or "—"}
    first = list(summary.get("figures") or [])
    figures = sorted(pngs(run_dir), key=lambda p: (first.index(p.name) if p.name in first else len(first), p.name))
    sections = [h.Section("key-numbers", "Key numbers", _key_numbers(summary, rows) + _judge_coverage(summary)),
                h.Section("curves", "Per-layer curves", _curves(rows, summary))]
    geometry = geometry_section(rows, summary)
    if geometry:
        sections.append(h.Section("geometry", "Geometry", geometry))
    if figures:
        sections.append(h.Section("figures", "Figures", "".join(h.figure(p) for p in figures)))
    found = _findings(rows)
    if found:
        sections.append(h.Section("findings", "Findings", found))
    labels = _labels(summary)
    if labels:
        sections.append(h.Section("labels", "Labels and method summary", labels))
    sections.append(h.Section("setup", "Config and versions", _setup(summary, run.config)))
    return h.page(f"medinterp · {title}", header(title, facts), sections, footer())


def write_run_report(run_dir: str | Path) -> Path:
    """Write ``<run_dir>/report.html`` (atomically) and return its path."""
    run_dir = Path(run_dir)
    return write_page(run_dir / REPORT_NAME, run_page(run_dir))

