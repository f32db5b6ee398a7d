"""``report.html`` of a sweep summary folder (runners/summarize.py), built from whatever files it holds.

Generic on purpose, so new summary files appear without code changes. Files are found recursively
(hidden folders, W&B's local ``wandb/`` folders and earlier reports skipped) and shown by kind:

- a ``knowledge_map.json`` (the map at default parameters) as the knowledge-map table, a
  ``findings.json`` as the findings table;
- every PNG as a figure;
- every CSV as a table (the first ``CSV_MAX_ROWS`` rows, with a note giving the total);
- every other JSON as a readable definition list / table (large ones folded).
"""
from __future__ import annotations

from pathlib import Path

from medinterp.report import html as h
from medinterp.report.common import REPORT_NAME, footer, header, load_json, when, write_page
from medinterp.report.knowledge_map import findings_section, map_section

FOLD_ABOVE = 60_000     # characters of rendered JSON above which it starts folded
SKIP_DIRS = {"wandb"}   # W&B's local run folders: its own copies, not results


def summary_files(folder: Path) -> list[Path]:
    """Every file under ``folder`` but reports, hidden files and files in hidden or ``wandb/`` folders, by path."""
    def shown(p: Path) -> bool:
        parts = p.relative_to(folder).parts
        return not any(part.startswith(".") for part in parts) and not SKIP_DIRS & set(parts[:-1])

    return sorted(p for p in folder.rglob("*") if p.is_file() and p.name != REPORT_NAME and shown(p))


def _anchor(rel: Path) -> str:
    return "f-" + "".join(c if c.isalnum() else "-" for c in rel.as_posix())


def summary_page(folder: Path) -> str:
    """The HTML of ``folder``'s report."""
    files = summary_files(folder)
    rel = {p: p.relative_to(folder) for p in files}
    by_suffix = {s: [p for p in files if p.suffix.lower() == s] for s in (".png", ".csv", ".json")}
    sections, shown_pngs = [], set()
    special = {"knowledge_map.json": ("Knowledge map", map_section), "findings.json": ("Findings", findings_section)}
    for p in by_suffix[".json"]:
        if p.name in special:
            title, make = special[p.name]
            png = p.with_suffix(".png")
            shown_pngs.add(png)
            where = "" if rel[p].parent == Path(".") else f" ({rel[p].parent.as_posix()})"
            sections.append(h.Section(_anchor(rel[p]), title + where, make(load_json(p), png if png.is_file() else None)))
    figures = [p for p in by_suffix[".png"] if p not in shown_pngs]
    if figures:
        sections.append(h.Section("figures", "Figures", "".join(h.figure(p, caption=str(rel[p].parent))
                                                                if rel[p].parent != Path(".") else h.figure(p)
                                                                for p in figures)))
    for p in by_suffix[".csv"]:
        sections.append(h.Section(_anchor(rel[p]), rel[p].as_posix(), h.csv_table(p)))
    for p in by_suffix[".json"]:
        if p.name in special:
            continue
        body = h.json_view(load_json(p))
        if len(body) > FOLD_ABOVE:
            body = h.details(f"{rel[p].as_posix()} ({len(body) // 1000} kB of HTML)", body)
        sections.append(h.Section(_anchor(rel[p]), rel[p].as_posix(), body))
    others = [p for p in files if p.suffix.lower() not in (".png", ".csv", ".json")]
    if others:
        sections.append(h.Section("other-files", "Other files",
                                  "<ul>" + "".join(f"<li>{h.text(rel[p].as_posix())}</li>" for p in others) + "</ul>"))
    newest = max(files, key=lambda p: p.stat().st_mtime) if files else folder
    facts = {"folder": folder.name, "written": when(newest), "figures": len(by_suffix[".png"]),
             "tables": len(by_suffix[".csv"]), "JSON files": len(by_suffix[".json"])}
    title = f"Sweep summary · {folder.name}"
    return h.page(f"medinterp · {title}", header(title, facts), sections, footer())


def write_summary_report(summary_dir: str | Path) -> Path:
    """Write ``<summary_dir>/report.html`` (atomically) and return its path."""
    summary_dir = Path(summary_dir)
    return write_page(summary_dir / REPORT_NAME, summary_page(summary_dir))
