"""Self-contained HTML reports of results folders: images embedded, CSS inline, no scripts, opens offline.

run            write_run_report(run_dir): a method run (runners/map.py) — header, best layers, per-layer
               curves with CI bands (inline SVG), UMAP grids and other figures, findings, config, versions
knowledge_map  write_map_report(model_dir): a synthesis folder (runners/synthesize.py) — the knowledge
               map and its table, the findings table and figure, parameters, sources
summary        write_summary_report(summary_dir): a sweep summary (runners/summarize.py) — every PNG,
               CSV (capped) and JSON in it, the map and findings as tables
validity       write_validity_report(folder): a validity run (runners/validate.py) — per lane the effect,
               random draws, validity z, baselines, damage and broken sets; validity.png; the probes
folders        write_report, write_reports: the report of a folder's kind (medinterp.results.folder_kind);
               walk a multirun
html, svg,     the building blocks: escaping with secrets scrubbed, tables, JSON views, SVG curves,
tables         knowledge-map and findings tables

Each writer puts ``report.html`` into the folder it reads (atomically) and returns its path.
See docs/report.md. The headless-Chromium checker of the reports lives with the tests (tests/report/browser.py).
"""
from __future__ import annotations

from medinterp.report.common import REPORT_NAME
from medinterp.report.folders import find_report_folders, write_report, write_reports
from medinterp.report.knowledge_map import write_map_report
from medinterp.report.run import write_run_report
from medinterp.report.summary import write_summary_report
from medinterp.report.validity import write_validity_report

__all__ = ["REPORT_NAME", "write_run_report", "write_map_report", "write_summary_report", "write_validity_report",
           "write_report", "write_reports",
           "find_report_folders"]
