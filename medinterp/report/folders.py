"""Which report a folder gets, and writing one for every result folder under a path (a multirun).

A folder is
- a ``summary`` when it holds ``stability.*`` or ``robustness.*`` (runners/summarize.py),
- else a ``map`` when it holds ``knowledge_map.json`` (runners/synthesize.py's ``<out>/<model>/``),
- else an ``atlas`` when it holds ``agreement.json`` and ``table1.csv`` (runners/compare.py),
- else a ``validity`` run when it holds ``validity.json`` (runners/validate.py),
- else a ``run`` when it holds ``per_layer.csv`` and ``summary.json`` (runners/map.py),
- else nothing: :func:`write_reports` looks in its sub-folders (hidden ones and W&B's local ``wandb/``
  folders skipped, and never below a folder that got a report).
"""
from __future__ import annotations

import logging
import os
from collections.abc import Callable
from pathlib import Path

from tqdm.auto import tqdm

from medinterp.errors import MedinterpError, unknown_choice
from medinterp.report.atlas import write_atlas_report
from medinterp.report.knowledge_map import write_map_report
from medinterp.report.run import write_run_report
from medinterp.report.summary import SKIP_DIRS, write_summary_report
from medinterp.report.validity import write_validity_report
from medinterp.results import folder_kind

log = logging.getLogger(__name__)

WRITERS: dict[str, Callable[[str | Path], Path]] = {
    "run": write_run_report, "map": write_map_report, "summary": write_summary_report, "atlas": write_atlas_report,
    "validity": write_validity_report}


def write_report(folder: str | Path, kind: str = "auto") -> Path:
    """Write ``<folder>/report.html`` as ``kind`` (``auto``: :func:`medinterp.results.folder_kind`); return its path."""
    folder = Path(folder)
    if kind != "auto" and kind not in WRITERS:
        raise unknown_choice("report kind", kind, ["auto", *WRITERS])
    if not folder.is_dir():
        raise MedinterpError(f"report: no such folder '{folder}'")
    kind = folder_kind(folder) if kind == "auto" else kind
    if kind is None:
        raise MedinterpError(f"report: '{folder}' is not a run, knowledge-map, sweep-summary, atlas or validity "
                             "folder")
    path = WRITERS[kind](folder)
    log.info("%s report: %s", kind, path)
    return path


def find_report_folders(path: str | Path) -> list[tuple[Path, str]]:
    """(folder, kind) for ``path`` itself if it has a kind, else for every such folder below it."""
    path = Path(path)
    if not path.is_dir():
        raise MedinterpError(f"report: no such folder '{path}'")
    found = []
    for root, dirs, _ in os.walk(path):
        kind = folder_kind(root)
        if kind:
            found.append((Path(root), kind))
            dirs.clear()  # a result folder's sub-folders are part of it
        else:
            dirs[:] = sorted(d for d in dirs if not d.startswith(".") and d not in SKIP_DIRS)
    return found


def write_reports(path: str | Path) -> list[Path]:
    """Write a report into ``path`` or, for a folder of folders (a multirun), into each result folder under it."""
    found = find_report_folders(path)
    if not found:
        raise MedinterpError(f"report: no run, knowledge-map or sweep-summary folder under '{path}' (a run holds "
                             "per_layer.csv and summary.json; a map knowledge_map.json; a summary stability.* "
                             "or robustness.*; an atlas agreement.json and table1.csv; a validity run validity.json)")
    return [write_report(folder, kind) for folder, kind in tqdm(found, desc="reports", unit="folder",
                                                                 disable=len(found) < 2)]
