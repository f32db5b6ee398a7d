"""What every report shares: reading a folder's JSON and PNGs, the header and footer, the atomic write."""
from __future__ import annotations

import json
import platform
from collections.abc import Mapping
from datetime import datetime
from pathlib import Path
from typing import Any

import medinterp
from medinterp.errors import MedinterpError
from medinterp.io import atomic_write
from medinterp.report import html as h

REPORT_NAME = "report.html"


def load_json(path: Path) -> Any:
    """``path`` parsed, or a one-line error naming the file."""
    if not path.is_file():
        raise MedinterpError(f"report: no {path.name} in '{path.parent}'")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise MedinterpError(f"report: {path} is not valid JSON ({err})") from None


def pngs(folder: Path) -> list[Path]:
    """The folder's PNG files (not hidden), by name."""
    return sorted(p for p in folder.glob("*.png") if p.is_file() and not p.name.startswith("."))


def when(path: Path) -> str:
    """The file's modification time, local, to the minute."""
    return datetime.fromtimestamp(path.stat().st_mtime).strftime("%Y-%m-%d %H:%M")


def header(title: str, facts: Mapping[str, Any]) -> str:
    """``<h1>`` and one line of labelled facts."""
    line = " · ".join(f"{h.text(k)} <b>{h.text(v)}</b>" for k, v in facts.items())
    return f"<h1>{h.text(title)}</h1><p class=\"meta\">{line}</p>"


def footer() -> str:
    return (f"Written by medinterp {h.text(medinterp.__version__)} (Python {h.text(platform.python_version())}) on "
            f"{datetime.now().strftime('%Y-%m-%d %H:%M')}. Self-contained: images are embedded, nothing is "
            "fetched, the page opens offline.")


def write_page(path: Path, document: str) -> Path:
    """Write ``document`` to ``path`` atomically (a reader never sees half a page)."""
    return atomic_write(path, lambda f: f.write(document))
