"""Two identical runs with the same seed write byte-identical per_layer.csv but for their run_id, for every method
(fresh processes).

UMAP (the method that drifted: arbitrary tie-breaking on degenerate read-outs) runs in the fast tier too, as two
runs in this process (conftest ``map_cell``); the fresh processes and the three model methods, never seen to
drift, are ``slow``.
"""
from __future__ import annotations

import csv
import json

import pytest

COMMON = ["model=tiny_llama", "domain=symptoms", "templates=2", "logger=none", "report=false", "plots=false",
          "resume=false", "seed=0"]
SETTINGS = {  # small but real: umap with two worker processes (the parallel path), patching with every pair kept
    "umap": ["method.n_boot=20", "method.n_perm=3", "method.n_jobs=2"],
    "saliency": [],
    "ablation": [],
    "patching": ["method.min_gap=0"],
}


@pytest.mark.parametrize("method", [pytest.param(m, marks=() if m == "umap" else (pytest.mark.slow,))
                                    for m in SETTINGS])
def test_same_seed_runs_are_byte_identical(method, map_cell, tmp_path):
    extra = SETTINGS[method]
    outs = [map_cell([*COMMON, f"method={method}", *extra], tmp_path / f"{method}-{i}") for i in (1, 2)]
    ids = [json.loads((out / "summary.json").read_text())["run_id"] for out in outs]
    assert ids[0] != ids[1]  # each run has its own id; everything else (seed, config_hash included) is identical
    first, second = ((out / "per_layer.csv").read_bytes().replace(i.encode(), b"") for out, i in zip(outs, ids))
    with open(outs[0] / "per_layer.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) > 3, method  # the run measured something
    assert first == second, f"{method}: {_largest_difference(outs)}"
    if method == "umap":  # read-out 0 is one row per template: no fit, NaN with the reason
        layer0 = [r for r in rows if r["layer"] == "0"]
        assert layer0 and all(r["value"] == "" and r["note"].startswith("degenerate: ") for r in layer0)


def _largest_difference(outs) -> str:
    """Where the two runs' per_layer.csv differ most (a readable failure instead of a byte diff)."""
    tables = []
    for out in outs:
        with open(out / "per_layer.csv", newline="") as f:
            tables.append({(r["domain"], r["metric"], r["layer"]): r for r in csv.DictReader(f)})
    if tables[0].keys() != tables[1].keys():
        return f"different rows: {sorted(tables[0].keys() ^ tables[1].keys())[:5]}"
    worst, where = 0.0, None
    for key, row in tables[0].items():
        for column in ("value", "ci_low", "ci_high"):
            a, b = row[column], tables[1][key][column]
            if a != b:
                try:
                    rel = abs(float(a) - float(b)) / max(abs(float(a)), abs(float(b)), 1e-300)
                except ValueError:
                    return f"{key} {column}: {a!r} vs {b!r}"
                if rel >= worst:
                    worst, where = rel, (key, column)
    return f"largest relative difference {worst:.2e} at {where}" if where else "only the note/id columns differ"
