"""Helpers for the distributed tests (imported by path: tests/ has one conftest module name already)."""
from __future__ import annotations

import csv
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np

from helpers import ROOT, torchrun_runner


def make_cache(out: Path, cache_dir: Path) -> Path:
    """A cache folder of its own (activations, resume checkpoints) that reuses the user's built models/tokenizers."""
    out.mkdir(parents=True)
    for sub in ("models", "tokenizers"):
        (Path(cache_dir) / sub).mkdir(parents=True, exist_ok=True)
        (out / sub).symlink_to(Path(cache_dir) / sub)
    return out


def env_for(tmp: Path) -> dict[str, str]:
    (tmp / "tmp").mkdir(exist_ok=True)
    return {**os.environ, "HYDRA_FULL_ERROR": "1", "PYTHONUNBUFFERED": "1", "TMPDIR": str(tmp / "tmp"),
            "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}


def run(cmd: list[str], tmp: Path, timeout: int = 300) -> subprocess.CompletedProcess:
    proc = subprocess.run(cmd, cwd=ROOT, env=env_for(tmp), capture_output=True, text=True, timeout=timeout)
    if proc.returncode != 0:
        raise AssertionError(f"exit {proc.returncode}: {' '.join(cmd)}\nSTDOUT\n{proc.stdout[-3000:]}\n"
                             f"STDERR\n{proc.stderr[-5000:]}")
    return proc


def map_cmd(*args: str) -> list[str]:
    return [sys.executable, str(ROOT / "runners" / "map.py"), *args]


def torchrun_cmd(nproc: int, *args: str) -> list[str]:
    return torchrun_runner(nproc, "map.py", *args)


def read_rows(path: Path) -> dict[tuple[str, str, str], dict[str, str]]:
    """Rows by (labeling, metric, layer), without ``run_id`` (each run folder has its own)."""
    with open(path, newline="") as f:
        return {(r["labeling"], r["metric"], r["layer"]): {k: v for k, v in r.items() if k != "run_id"}
                for r in csv.DictReader(f)}


def max_rel_diff(a: dict, b: dict, skip=lambda key: False) -> float:
    """Largest relative difference of value/ci_low/ci_high over rows present in both (keys must match)."""
    assert a.keys() == b.keys(), sorted(set(a) ^ set(b))
    worst = 0.0
    for key in a:
        if skip(key):
            continue
        assert a[key]["n"] == b[key]["n"], key
        assert a[key].get("note", "") == b[key].get("note", ""), (key, a[key].get("note"), b[key].get("note"))
        for field in ("value", "ci_low", "ci_high"):  # an empty cell is NaN (with a note saying why)
            x, y = float(a[key][field] or "nan"), float(b[key][field] or "nan")
            if math.isnan(x) or math.isnan(y):
                assert math.isnan(x) and math.isnan(y), (key, field, x, y)
                continue
            worst = max(worst, abs(x - y) / max(abs(x), 1e-12))
    return worst


def activations(run_dir: Path) -> dict[str, np.ndarray]:
    """The run's captured activations (its cache_dir's .npy files) by path relative to the cache's activations/."""
    cache = Path(json.loads((run_dir / "config.json").read_text())["cache_dir"])
    return {str(p.relative_to(cache / "activations")): np.load(p) for p in sorted((cache / "activations").rglob("*.npy"))}
