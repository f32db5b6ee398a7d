"""Atomic file writes: results are never half-written.

Every writer writes to a temporary file in the destination folder and ``os.replace``s it into place,
so a reader (or a crash) sees either the old file or the complete new one.
"""
from __future__ import annotations

import csv
import json
import os
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any


@contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; on success it replaces ``path``, on error it is removed."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; results should be as readable as any file
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write(path: str | os.PathLike, write: Callable[[IO[str]], Any], newline: str | None = None) -> Path:
    """Open a temporary text file, let ``write(f)`` fill it, then move it onto ``path``."""
    with atomic_path(path) as tmp, open(tmp, "w", encoding="utf-8", newline=newline) as f:
        write(f)
    return Path(path)


def write_json(path: str | os.PathLike, data: Any) -> Path:
    """Atomically write ``data`` as indented JSON (numpy scalars and paths become plain values)."""
    return atomic_write(path, lambda f: json.dump(data, f, indent=2, default=_plain, allow_nan=True))


def save_png(figure: Any, path: str | os.PathLike) -> Path:
    """Atomically save a matplotlib figure as a PNG (110 dpi, tight box) and close it: the one figure saver."""
    import matplotlib.pyplot as plt

    with atomic_path(path) as tmp:
        figure.savefig(tmp, format="png", dpi=110, bbox_inches="tight")
    plt.close(figure)
    return Path(path)


def _plain(obj: Any) -> Any:
    if hasattr(obj, "item"):
        return obj.item()
    if hasattr(obj, "tolist"):
        return obj.tolist()
    return str(obj)


CsvCell = int | float | str | None


def parse_cell(text: str) -> CsvCell:
    """A CSV cell as an int, a float (NaN and infinities kept), None (empty) or the text itself."""
    if text == "":
        return None
    try:
        return int(text)
    except ValueError:
        pass
    try:
        return float(text)
    except ValueError:
        return text


def read_csv_cells(path: str | os.PathLike, max_rows: int | None = None) -> tuple[list[str], list[list[CsvCell]], int]:
    """A CSV file's header, its first ``max_rows`` rows (all when None) as :func:`parse_cell` values, and its
    total row count: the one CSV parser of the report and W&B tables, which render the cells their own way.

    A ragged line is padded (with None) or cut to the header's width, so it cannot break a table built from it.
    """
    with open(path, newline="", encoding="utf-8") as f:
        reader = csv.reader(f)
        header = next(reader, [])
        rows, total = [], 0
        for cells in reader:
            total += 1
            if max_rows is None or len(rows) < max_rows:
                rows.append([parse_cell(c) for c in (cells + [""] * len(header))[:len(header)]])
    return list(header), rows, total
