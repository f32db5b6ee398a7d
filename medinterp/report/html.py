"""HTML building blocks of the reports: escaping with secrets scrubbed, tables, JSON views, embedded images.

Everything a report shows goes through :func:`text` (``html.escape`` after scrubbing secret values), so
no string from a results folder can inject markup or leak a key. Images become ``data:`` URIs, the CSS
is inline and a Content-Security-Policy forbids every other source: a report opens from disk, offline,
and shows the same thing anywhere.

- ``text``, ``num``, ``layer_ranges``: one value as safe HTML;
- ``redact``: a config mapping whose secret-looking keys (:func:`medinterp.secrets.is_secret_key`: ``api_key``,
  ``token``, ``secret``, ``password``, ...) show ``[redacted]`` as their value; secret environment values
  (:func:`medinterp.secrets.secret_values`) are scrubbed from all text;
- ``table``, ``csv_table``, ``json_view``, ``details``, ``figure``: page parts;
- ``page``: the whole document from a header and :class:`Section` s.
"""
from __future__ import annotations

import base64
import html
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from medinterp import secrets
from medinterp.io import read_csv_cells
from medinterp.secrets import is_secret_key

REDACTED = "[redacted]"  # what a report shows instead of a secret (W&B configs drop the key instead)
_MIMES = {".png": "image/png", ".jpg": "image/jpeg", ".jpeg": "image/jpeg", ".gif": "image/gif",
          ".webp": "image/webp", ".svg": "image/svg+xml"}
CSV_MAX_ROWS = 200    # a CSV longer than this shows its first rows and a note
LIST_INLINE = 12      # longer lists of numbers are shortened in JSON views


# -- secrets (which keys and values are secret: medinterp.secrets; here only how a page shows them) ---
def scrub(s: str) -> str:
    """``s`` with every secret environment value replaced by ``[redacted]``."""
    return secrets.scrub(s, marker=REDACTED)


def redact(obj: Any) -> Any:
    """A copy of ``obj`` (nested dicts/lists) with secret-looking keys' values replaced by ``[redacted]``."""
    if isinstance(obj, Mapping):
        return {k: REDACTED if is_secret_key(k) and v is not None else redact(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [redact(v) for v in obj]
    return obj


# -- values ------------------------------------------------------------------------------------------
def text(value: object) -> str:
    """``value`` as escaped HTML text, secrets scrubbed."""
    return html.escape(scrub(str(value)), quote=True)


def num(value: object, digits: int = 4) -> str:
    """A number to ``digits`` significant digits (ints as they are); None/NaN/'' as an em dash."""
    if value is None or value == "":
        return "—"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return "—" if math.isnan(value) else f"{value:.{digits}g}"
    return text(value)


def ci(low: object, high: object) -> str:
    """``[low, high]`` or an em dash when either end is missing."""
    if low is None or high is None or any(isinstance(v, float) and math.isnan(v) for v in (low, high)):
        return "—"
    return f'<span class="nw">[{num(low)}, {num(high)}]</span>'


def layer_ranges(layers: Iterable[int]) -> str:
    """``[0, 1, 2, 5, 7, 8]`` → ``0–2, 5, 7–8``; empty → ``none``."""
    layers = sorted(set(layers))
    if not layers:
        return "none"
    runs, start, prev = [], layers[0], layers[0]
    for cur in layers[1:]:
        if cur != prev + 1:
            runs.append((start, prev))
            start = cur
        prev = cur
    return intervals(runs + [(start, prev)])


def intervals(ivs: Iterable[Sequence[int]]) -> str:
    """Closed layer intervals ``[[4, 6], [9, 9]]`` → ``4–6, 9``; empty → ``none``."""
    parts = [f"{a}" if a == b else f"{a}–{b}" for a, b in ivs]
    return ", ".join(parts) or "none"


# -- page parts --------------------------------------------------------------------------------------
def table(headers: Sequence[str], rows: Iterable[Sequence[str]], note: str = "", cls: str = "",
          tall: bool = False) -> str:
    """A table; ``rows`` are cells already made safe (use :func:`text` / :func:`num`). With ``tall``, more
    than 25 rows scroll inside a box of limited height, the header row kept in view. Columns with
    secret-looking names are redacted."""
    secret = [is_secret_key(h) for h in headers]
    rows = [[REDACTED if i < len(secret) and secret[i] and c not in ("—", "") else c for i, c in enumerate(row)]
            for row in rows]
    head = "".join(f"<th>{text(h)}</th>" for h in headers)
    body = "\n".join("<tr>" + "".join(f"<td>{c}</td>" for c in row) + "</tr>" for row in rows)
    note_html = f'<p class="note">{note}</p>' if note else ""
    box = "scroll tall" if tall and len(rows) > 25 else "scroll"
    return (f'<div class="{box}"><table class="{cls}"><thead><tr>{head}</tr></thead>\n<tbody>{body}</tbody>'
            f"</table></div>{note_html}")


def csv_table(path: Path, max_rows: int = CSV_MAX_ROWS) -> str:
    """A CSV file (:func:`medinterp.io.read_csv_cells`) as a table of its first ``max_rows`` rows, numbers to
    4 significant digits, with a note when it has more."""
    headers, cells, total = read_csv_cells(path, max_rows)
    rows = [[num(c) for c in row] for row in cells]
    note = f"{total} rows." if total <= max_rows else \
        f"Showing the first {max_rows} of {total} rows; the full table is {text(path.name)}."
    return table(headers, rows, note=note, cls="num", tall=True)


def details(summary: str, body: str, open_: bool = False) -> str:
    """A collapsible block; ``summary`` is plain text, ``body`` HTML."""
    return f"<details{' open' if open_ else ''}><summary>{text(summary)}</summary>{body}</details>"


def _scalar(v: Any) -> bool:
    return v is None or isinstance(v, (str, int, float, bool))


def _records(v: Any) -> bool:
    """A list of flat dicts (a table): every item a dict of scalars."""
    return isinstance(v, list) and bool(v) and all(isinstance(d, Mapping) and all(_scalar(x) for x in d.values())
                                                   for d in v)


def json_view(obj: Any, max_rows: int = 50, depth: int = 0) -> str:
    """Readable HTML for JSON data: dicts as definition lists, lists of flat dicts as tables, long lists of
    numbers shortened, deep or long parts folded into ``<details>``."""
    if _scalar(obj):
        return num(obj)
    if isinstance(obj, Mapping):
        if not obj:
            return "—"
        items = []
        for k, v in obj.items():
            body = REDACTED if is_secret_key(k) and v is not None else json_view(v, max_rows, depth + 1)
            if not _scalar(v) and depth >= 2 and len(body) > 2000:
                body = details(f"{len(v)} entries", body)
            items.append(f"<dt>{text(k)}</dt><dd>{body}</dd>")
        return f'<dl class="json">{"".join(items)}</dl>'
    obj = list(obj)
    if not obj:
        return "[]"
    if all(_scalar(v) for v in obj):
        shown = ", ".join(num(v) for v in obj[:LIST_INLINE])
        return f"[{shown}{f', … ({len(obj)} values)' if len(obj) > LIST_INLINE else ''}]"
    if _records(obj):
        headers = list(dict.fromkeys(k for d in obj for k in d))
        rows = [[num(d.get(h)) for h in headers] for d in obj[:max_rows]]
        note = "" if len(obj) <= max_rows else f"Showing the first {max_rows} of {len(obj)} rows."
        return table(headers, rows, note=note, cls="num", tall=True)
    items = "".join(f"<li>{json_view(v, max_rows, depth + 1)}</li>" for v in obj[:max_rows])
    more = f'<p class="note">Showing the first {max_rows} of {len(obj)} items.</p>' if len(obj) > max_rows else ""
    return f'<ol class="json">{items}</ol>{more}'


def data_uri(path: Path) -> str:
    """The file as a base64 ``data:`` URI (its type from the suffix)."""
    mime = _MIMES.get(path.suffix.lower(), "application/octet-stream")
    return f"data:{mime};base64,{base64.b64encode(path.read_bytes()).decode('ascii')}"


def figure(path: Path, caption: str = "") -> str:
    """An embedded image with its file name (and ``caption``) below."""
    cap = text(path.name) + (f" — {text(caption)}" if caption else "")
    return f'<figure><img src="{data_uri(path)}" alt="{text(path.stem)}"><figcaption>{cap}</figcaption></figure>'


@dataclass(frozen=True)
class Section:
    """One titled part of a page; ``body`` is HTML; ``id`` is its anchor in the contents."""

    id: str
    title: str
    body: str


CSS = """
:root{--fg:#1d2430;--muted:#5b6472;--line:#d9dee5;--bg:#fff;--band:#f4f6f9;--accent:#1f6fb4}
*{box-sizing:border-box}
body{margin:0;font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,"Helvetica Neue",Arial,sans-serif;
 color:var(--fg);background:var(--bg)}
main{max-width:1280px;margin:0 auto;padding:20px 28px 60px}
header{border-bottom:2px solid var(--line);padding-bottom:10px;margin-bottom:8px}
h1{font-size:24px;margin:0 0 4px}h2{font-size:19px;margin:30px 0 8px;padding-top:6px;border-top:1px solid var(--line)}
section:first-of-type h2{border-top:none;margin-top:14px}.nw{white-space:nowrap}
h3{font-size:15px;margin:18px 0 6px;color:var(--muted)}
.meta{color:var(--muted);margin:2px 0}.meta b{color:var(--fg);font-weight:600}
nav{margin:8px 0 0;font-size:13px}nav a{color:var(--accent);text-decoration:none;margin-right:14px}
.keys{display:flex;flex-wrap:wrap;gap:10px;margin:10px 0}
.key{background:var(--band);border-radius:6px;padding:8px 12px;min-width:150px}
.key .v{font-size:18px;font-weight:600}.key .l{color:var(--muted);font-size:12px}
.scroll{overflow-x:auto}.scroll.tall{max-height:560px;overflow-y:auto;border-bottom:1px solid var(--line)}
table{border-collapse:collapse;margin:6px 0;font-size:13px}
th,td{border-bottom:1px solid var(--line);padding:3px 10px;text-align:left;vertical-align:top}
th{background:var(--band);font-weight:600;position:sticky;top:0}
table.num td{font-variant-numeric:tabular-nums}
tbody tr:nth-child(even){background:#fafbfc}
.note{color:var(--muted);font-size:12px;margin:2px 0 10px}
figure{margin:10px 0 18px}figure img{max-width:100%;height:auto;border:1px solid var(--line)}
figcaption{color:var(--muted);font-size:12px}
.grid{display:flex;flex-wrap:wrap;gap:8px}
.grid svg{border:1px solid var(--line);background:#fff}
.legend{color:var(--muted);font-size:12px}
.legend i{display:inline-block;width:22px;height:0;margin:0 4px 3px 10px;vertical-align:middle}
dl.json{display:grid;grid-template-columns:max-content auto;gap:2px 14px;margin:4px 0}
dl.json dt{font-weight:600;color:var(--muted)}dl.json dd{margin:0}
ol.json{margin:2px 0;padding-left:22px}
pre{background:var(--band);padding:10px;overflow-x:auto;font-size:12px}
details{margin:6px 0}summary{cursor:pointer;color:var(--accent)}
footer{margin-top:40px;color:var(--muted);font-size:12px;border-top:1px solid var(--line);padding-top:8px}
"""

# nothing but inline styles and data: images may load; scripts, fonts, frames and requests are refused
CSP = "default-src 'none'; img-src data:; style-src 'unsafe-inline'"


def page(title: str, header: str, sections: Sequence[Section], footer: str = "") -> str:
    """The whole self-contained document: ``header`` HTML, a contents line, then the sections."""
    nav = " ".join(f'<a href="#{text(s.id)}">{text(s.title)}</a>' for s in sections)
    body = "\n".join(f'<section id="{text(s.id)}"><h2>{text(s.title)}</h2>\n{s.body}\n</section>' for s in sections)
    return (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">\n'
            f'<meta http-equiv="Content-Security-Policy" content="{CSP}">\n'
            f'<meta name="viewport" content="width=device-width, initial-scale=1">\n'
            f"<title>{text(title)}</title>\n<style>{CSS}</style></head>\n"
            f"<body><main>\n<header>{header}<nav>{nav}</nav></header>\n{body}\n"
            f"<footer>{footer}</footer>\n</main></body></html>\n")
