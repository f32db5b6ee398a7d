"""The golden tiny-model map: two tiny random models x two domains x every method, run through runners/map.py.

``make_map(out)`` runs the map (two Hydra multiruns in one subprocess each; ``in_process=True``: the same cells one
by one in this process, tests/helpers.py) and returns ``{cell: folder}``;
``tests/data/golden_map/make_golden_map.py`` keeps its per_layer.csv / per_item.csv as the golden copy and
``tests/runners/test_golden_map.py`` compares a fresh run with it. The golden copy was made on the code before
the one-seam redesign (issue 15) and must not change unless a change of numbers is meant (say so in the commit).
"""
from __future__ import annotations

import csv
import itertools
import math
from pathlib import Path

from helpers import run_cell_in_process, run_runner

GOLDEN = Path(__file__).resolve().parent / "data" / "golden_map"
COMMON = ("logger=none", "report=false", "plots=false", "device=cpu", "use_activation_cache=false", "resume=false")
RUNS = {  # sweep -> overrides; patching with min_gap 0.01: on random weights most gaps are < 1 logit
    "main": ("model=tiny_llama,tiny_gemma3", "domain=age,disease", "method=umap,saliency,ablation"),
    "patching": ("model=tiny_llama,tiny_gemma3", "domain=disease", "method=patching", "method.min_gap=0.01"),
}
KEY = ("model", "domain", "labeling", "method", "metric", "layer")
# The golden copy was made where torch's CPU kernels are AVX-512 (torch.backends.cpu.get_cpu_capability()); with
# OpenBLAS pinned to one kernel set (medinterp/__init__.py), such hosts reproduce it to 1e-6 relative, Intel or AMD.
# Where torch runs other kernels (an AVX2-only host), float sums round differently: measured with
# ATEN_CPU_CAPABILITY=avx2, every per-layer metric stays within 5e-5 relative (per-item patching ratios of small logit
# gaps within 4e-4) except those measured in UMAP's stochastic layout (EMBEDDING_METRICS), which move by up to 0.05
# silhouette: UMAP's SGD amplifies last-bit differences. There the comparison is at 1e-3 and skips those metrics.
# Intel hosts with AMX (Sapphire Rapids and later) round differently too although torch reports AVX-512 there (measured
# 2026-12-06 on such a host, torch 2.13: ablation's KL and Δlog p within 2.1e-6, the raw-space UMAP-cell metrics
# within 5e-7, the layout metrics up to 0.55 silhouette apart; no MKL_CBWR, MKL_ENABLE_INSTRUCTIONS or
# ONEDNN_MAX_CPU_ISA setting changes that), so they are compared like an AVX2 host.
GOLDEN_CPU_CAPABILITY = "AVX512"
EMBEDDING_METRICS = frozenset({"silhouette_umap", "silhouette_umap_null", "silhouette_umap_diff", "r2_umap",
                               "r2_umap_null", "anisotropy"})
ITEM_KEY = ("model", "domain", "method", "labeling", "metric", "layer", "item", "template")


def make_map(out: Path, in_process: bool = False) -> dict[str, Path]:
    """Run the golden map into ``out``; ``{"<model>-<domain>-<method>": run folder}``."""
    if in_process:
        return {cell: run_cell_in_process(overrides, out / cell) for cell, overrides in jobs()}
    cells = {}
    for name, overrides in RUNS.items():
        run_runner("map.py", "-m", *overrides, *COMMON, f"hydra.sweep.dir={out / name}", timeout=900)
        for folder in sorted((out / name).iterdir()):
            if (folder / "per_layer.csv").is_file():
                cells[folder.name.split("_", 1)[1]] = folder
    return cells


def jobs() -> list[tuple[str, tuple[str, ...]]]:
    """The cells of RUNS' multiruns in Hydra's order (the first swept key varies slowest), as
    ``("<model>-<domain>-<method>", overrides of one run)``."""
    out = []
    for overrides in RUNS.values():
        for run in itertools.product(*[[f"{key}={v}" for v in values.split(",")] for key, _, values in
                                       (o.partition("=") for o in overrides)]):
            choice = dict(o.split("=", 1) for o in run)
            out.append((f"{choice['model']}-{choice['domain']}-{choice['method']}", (*run, *COMMON)))
    return out


def read_table(path: Path, key: tuple[str, ...]) -> dict[tuple, dict[str, str]]:
    with open(path, newline="") as f:
        return {tuple(row[k] for k in key): row for row in csv.DictReader(f)}


def tolerance() -> tuple[float, frozenset[str]]:
    """(relative tolerance, metrics not compared) on this host (see GOLDEN_CPU_CAPABILITY)."""
    import torch

    if torch.backends.cpu.get_cpu_capability() == GOLDEN_CPU_CAPABILITY and not has_amx():
        return 1e-6, frozenset()
    return 1e-3, EMBEDDING_METRICS


def has_amx() -> bool:
    """Whether this CPU has Intel AMX tiles (Linux: ``amx_tile`` among /proc/cpuinfo's flags)."""
    try:
        with open("/proc/cpuinfo") as f:
            return any(line.startswith("flags") and "amx_tile" in line.split() for line in f)
    except OSError:
        return False


def differences(golden: Path, fresh: Path, key: tuple[str, ...], rtol: float, atol: float,
                skip_metrics: frozenset[str] = frozenset()) -> list[str]:
    """Where the table at ``fresh`` differs from ``golden`` (columns of the golden copy only; NaN equals NaN; rows of
    ``skip_metrics`` must exist but their values are not compared)."""
    want, got = read_table(golden, key), read_table(fresh, key)
    out = [f"missing row {k}" for k in want.keys() - got.keys()] + [f"extra row {k}" for k in got.keys() - want.keys()]
    for k in want.keys() & got.keys():
        if dict(zip(key, k)).get("metric") in skip_metrics:
            continue
        for col, a in want[k].items():
            if col in key:
                continue
            b = got[k].get(col)
            if a == b:
                continue
            try:
                x, y = float(a), float(b)
            except (TypeError, ValueError):
                out.append(f"{k} {col}: {a!r} != {b!r}")
                continue
            if not (math.isnan(x) and math.isnan(y)) and not math.isclose(x, y, rel_tol=rtol, abs_tol=atol):
                out.append(f"{k} {col}: {a} != {b}")
    return sorted(out)
