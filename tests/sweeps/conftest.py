"""Hand-made sweeps whose selections are known exactly (map rules with sigma = 0, see docs/knowledge-map.md).

With ``sigma=0`` the curves are not smoothed, so:

- patching (segments rule, 75th percentile, >= 2 layers): a curve that is 1 on two adjacent layers and 0
  elsewhere (9 read-outs) selects exactly those two layers (the 75th percentile is 0; only the ones are above);
- umap (window rule): the ramp below rises most over layers 4..6 (s(6) - s(4) = 0.8), so it selects [4, 6].

So a setting whose patching bump sits on layers {a, a+1} selects {a, a+1} for patching, [4, 6] for umap, and
their intersection as the consensus (min_methods = 2).
"""
from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pytest

from medinterp.results import Row, RunWriter

N_LAYERS = 8
RAMP = [0, 0, 0, 0, 0.2, 0.6, 1.0, 1.0, 1.0]
# (seed, template) -> first layer of the patching bump: layer 4 is selected in 3 of 4 settings, 6 in 1 of 4
SETTINGS = {(0, "a"): 4, (0, "b"): 4, (1, "a"): 4, (1, "b"): 5}


def bump(first: int) -> list[float]:
    return [1.0 if layer in (first, first + 1) else 0.0 for layer in range(N_LAYERS + 1)]


def write_run(folder: Path, method: str, values: list[float], config: dict, model: str = "toy", domain: str = "disease") -> Path:
    """A run folder as runners/map.py writes it: per_layer.csv + summary.json with the resolved config."""
    metric, labeling = ("silhouette_umap", "chapter") if method == "umap" else ("p_resid_diff", "pairs")
    writer = RunWriter(folder)
    writer.add_rows(Row(model, domain, labeling, method, metric, layer, float(v), n=10) for layer, v in enumerate(values))
    writer.finish({"config": config})
    return folder


def make_methods_sweep(root: Path, settings: dict = SETTINGS, with_umap: bool = True) -> Path:
    """A multirun folder: per setting a patching job (and a umap job), configs as the map runner records them."""
    job = 0
    for (seed, template), first in settings.items():
        for method in ("umap", "patching") if with_umap else ("patching",):
            config = {"seed": seed, "templates": [template], "method": {"seed": seed, "n_boot": 20},
                      "cache_dir": f"/machine{job}/cache",  # differs per job: ignored, never a setting
                      "robustness": {"template": {"a": "t1", "b": "t2"}[template]}}
            write_run(root / f"{job}_toy-disease-{method}", method, RAMP if method == "umap" else bump(first), config)
            job += 1
    return root


def kmap(intervals: dict, params: dict | None = None, model: str = "toy", n_layers: int = N_LAYERS) -> dict:
    """A minimal knowledge map: {domain: {method: [[a, b], ...], "consensus": [...]}}."""
    from medinterp.maps.synthesis import MapParams

    p = {**MapParams().as_dict(), **(params or {})}
    domains = {}
    for domain, entries in intervals.items():
        domains[domain] = {m: {"intervals": iv, "curve": [0.0] * (n_layers + 1), "raw": [0.0] * (n_layers + 1)}
                           for m, iv in entries.items() if m != "consensus"}
        domains[domain]["consensus"] = entries.get("consensus", [])
    return {"model": model, "n_layers": n_layers, "params": p, "domains": domains, "missing": []}


def write_map(folder: Path, kmap_: dict) -> Path:
    path = folder / kmap_["model"] / "knowledge_map.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(kmap_))
    return path


@pytest.fixture
def kit():
    """The builders above (test modules cannot import this conftest by name: tests/conftest.py shadows it)."""
    return SimpleNamespace(N_LAYERS=N_LAYERS, RAMP=RAMP, SETTINGS=SETTINGS, bump=bump, write_run=write_run,
                           make_methods_sweep=make_methods_sweep, kmap=kmap, write_map=write_map)


@pytest.fixture
def methods_sweep(tmp_path) -> Path:
    return make_methods_sweep(tmp_path / "sweep")


@pytest.fixture
def sigma0():
    from medinterp.maps.synthesis import MapParams

    return MapParams(sigma=0.0)
