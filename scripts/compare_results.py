"""Compare the per_layer.csv / per_item.csv of two result folders (or two map folders) at a relative tolerance.

    python scripts/compare_results.py BEFORE AFTER [--rtol 1e-6] [--atol 0]

BEFORE and AFTER are run folders (each holding per_layer.csv) or folders of run folders (a multirun's sweep dir,
matched by the cell name after the job number: ``0_gemma3_270m-age-umap`` ~ ``3_gemma3_270m-age-umap``). Rows are
matched on (model, domain, labeling, method, metric, layer[, item, template]); every other column is compared,
except the provenance columns (run id, config hash, seed), which differ between runs by design. NaN equals NaN.
Prints each difference and, per cell, the rows compared and the largest relative difference; exits 1 if any cell
differs beyond the tolerance or misses a table. The comparison is the golden map test's (tests/golden_map.py).
"""
from __future__ import annotations

import argparse
import csv
import math
import re
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from golden_map import ITEM_KEY, KEY, differences, read_table  # noqa: E402

from medinterp.results import PROVENANCE_COLUMNS  # noqa: E402

TABLES = (("per_layer.csv", KEY), ("per_item.csv", ITEM_KEY))


def cell_name(folder: Path) -> str:
    """The run folder's name without a multirun's job number (``3_gemma3_270m-age-umap`` -> ``gemma3_270m-age-umap``)."""
    return re.sub(r"^\d+_", "", folder.name)


def cells(folder: Path) -> dict[str, Path]:
    """{cell name: run folder}: the folder itself if it holds per_layer.csv, else its run folders."""
    if (folder / "per_layer.csv").is_file():
        return {cell_name(folder): folder}
    return {cell_name(p): p for p in sorted(folder.iterdir()) if (p / "per_layer.csv").is_file()}


def largest_relative(before: Path, after: Path, key: tuple[str, ...]) -> tuple[int, float]:
    """(rows matched, the largest |a − b| / max(|a|, |b|) over the numeric cells of matched rows)."""
    want, got = read_table(before, key), read_table(after, key)
    worst = 0.0
    for k in want.keys() & got.keys():
        for col, a in want[k].items():
            if col in key or col in PROVENANCE_COLUMNS or a == got[k].get(col):
                continue
            try:
                x, y = float(a), float(got[k][col])
            except (TypeError, ValueError):
                continue
            if not (math.isnan(x) or math.isnan(y)):
                worst = max(worst, abs(x - y) / max(abs(x), abs(y)))
    return len(want.keys() & got.keys()), worst


def without_provenance(path: Path, out: Path) -> Path:
    """A copy of the table at ``path`` without the provenance columns."""
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    columns = [c for c in (rows[0].keys() if rows else []) if c not in PROVENANCE_COLUMNS]
    with open(out, "w", newline="") as f:
        w = csv.DictWriter(f, columns, extrasaction="ignore")
        w.writeheader()
        w.writerows(rows)
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("before", type=Path)
    ap.add_argument("after", type=Path)
    ap.add_argument("--rtol", type=float, default=1e-6)
    ap.add_argument("--atol", type=float, default=0.0)
    args = ap.parse_args()
    import tempfile

    before, after = cells(args.before), cells(args.after)
    failed = False
    for name in sorted(before.keys() | after.keys()):
        if name not in before or name not in after:
            print(f"{name}: only in {'BEFORE' if name in before else 'AFTER'}")
            failed = True
            continue
        for table, key in TABLES:
            a, b = before[name] / table, after[name] / table
            if not a.is_file() and not b.is_file():
                continue
            if not (a.is_file() and b.is_file()):
                print(f"{name}/{table}: missing in {'AFTER' if a.is_file() else 'BEFORE'}")
                failed = True
                continue
            with tempfile.TemporaryDirectory() as tmp:
                diffs = differences(without_provenance(a, Path(tmp) / "a.csv"), b, key, args.rtol, args.atol)
            n, worst = largest_relative(a, b, key)
            print(f"{name}/{table}: {n} rows, max relative difference {worst:.3g}, "
                  f"{len(diffs)} beyond rtol={args.rtol:g}")
            for line in diffs[:20]:
                print("   ", line)
            failed |= bool(diffs)
    return int(failed)


if __name__ == "__main__":
    sys.exit(main())
