"""Fixtures for the tracking tests: an isolated W&B environment, synthetic results folders, and a reader
for offline runs.

Every W&B file (runs, artifact staging, caches, core logs) is kept under ``tmp_path``, so a test can walk
everything W&B wrote. Offline ``.wandb`` logs are read back with ``wandb leet inspect --json`` (shipped
with wandb; the Python package has no reader for them).
"""
from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

from medinterp.prompts import load_prompt_set
from medinterp.results import Row, RunWriter

N_LAYERS = 3  # read-outs 0..3


@pytest.fixture(autouse=True)
def wandb_env(tmp_path, monkeypatch):
    """Offline W&B with every file it writes under tmp_path; no key, no server."""
    for var in ("WANDB_API_KEY", "WANDB_MODE", "WANDB_DIR", "WANDB_ENTITY", "WANDB_PROJECT", "WANDB_RUN_GROUP",
                "WANDB_JOB_TYPE", "WANDB_TAGS", "WANDB_NAME", "WANDB_BASE_URL", "OPENAI_API_KEY", "HF_TOKEN"):
        monkeypatch.delenv(var, raising=False)
    home = tmp_path / "wandb_home"
    for var, sub in (("WANDB_DATA_DIR", "data"), ("WANDB_CACHE_DIR", "cache"), ("WANDB_CONFIG_DIR", "config"),
                     ("WANDB_ARTIFACT_DIR", "artifacts")):
        monkeypatch.setenv(var, str(home / sub))
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    return home


def _figure(title: str):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(2, 1.5))
    ax.plot([0, 1, 2, 3], [0.0, 0.1, 0.4, 0.9])
    ax.set_title(title)
    return fig


def sil(layer: int) -> float:
    return 0.1 * layer * (4 - layer)


def run_rows() -> list[Row]:
    """Hand-checkable rows: silhouette_umap on 'mechanism' = 0.1·l·(4 − l) ± 0.05 at layers 0..3 (0, 0.3,
    0.4, 0.3: best layer 2, not the last), an r2 on 'age/female' (a labeling with a '/') = l/10 with no
    CI (best layer 3), and one layer −1 baseline."""
    rows = [Row("tiny_llama", "drugs", "specialty", "umap", "silhouette_surface", -1, 0.25, 0.2, 0.3, 40)]
    for layer in range(N_LAYERS + 1):
        v = sil(layer)
        rows.append(Row("tiny_llama", "drugs", "mechanism", "umap", "silhouette_umap", layer, v, v - 0.05, v + 0.05, 40))
        rows.append(Row("tiny_llama", "drugs", "age/female", "umap", "r2_raw", layer, layer / 10, math.nan, math.nan, 40))
    return rows


@pytest.fixture
def run_folder(tmp_path) -> Path:
    """A method run folder as runners/map.py writes it: per_layer.csv, summary.json, two figures, a log."""
    prompt_set = load_prompt_set("drugs")
    writer = RunWriter(tmp_path / "runs" / "tiny_llama-drugs-umap")
    writer.add_rows(run_rows())
    writer.add_figure("curves_categorical", _figure("curves"))
    writer.add_figure("umap_grid_mechanism", _figure("grid"))
    summary = {
        "model": {"name": "tiny_llama", "key": "tiny_llama-abc", "family": "llama", "n_layers": N_LAYERS,
                  "d_model": 64, "device": "cpu"},
        "domain": "drugs", "method": "umap", "templates": ["started"], "reduction": "last", "n_points": 40,
        "prompt_set": {"key": prompt_set.key, "version": prompt_set.version, "sha256": prompt_set.sha256,
                       "source": prompt_set.source},
        "timings": {"capture_s": 1.5, "total_s": 2.5},
        "versions": {"medinterp": "0.1.0"},
        "config": {"model": {"name": "tiny_llama"}, "domain": {"prompt_set": "drugs"}, "method": {"n_boot": 200},
                   "judge": {"model": "gpt-4o", "api_key_env": "OPENAI_API_KEY", "max_tokens": 200}},
    }
    folder = writer.finish(summary)
    (folder / "map.log").write_text("[INFO] run log\n")
    return folder


@pytest.fixture
def map_folder(tmp_path, run_folder) -> Path:
    """A synthesis <out>/<model>/ folder built by medinterp.maps.synthesize from ``run_folder``."""
    from medinterp.maps.synthesis import synthesize

    (folder,) = synthesize(run_folder, tmp_path / "synthesis")
    return folder


def read_offline_run(wandb_dir: Path) -> list[dict]:
    """Every record of an offline run's .wandb log, as dicts (``wandb leet inspect --json``)."""
    out = subprocess.run([sys.executable, "-m", "wandb", "leet", "inspect", "--json", str(wandb_dir)],
                         capture_output=True, text=True, timeout=60, check=True)
    return [json.loads(line) for line in out.stdout.splitlines() if line.startswith("{")]


def read_offline_summary(wandb_dir: Path) -> dict:
    """An offline run's final state (config, summary, name, ...): ``wandb leet inspect --summary --json``."""
    out = subprocess.run([sys.executable, "-m", "wandb", "leet", "inspect", "--summary", "--json", str(wandb_dir)],
                         capture_output=True, text=True, timeout=60, check=True)
    return json.loads(out.stdout)


@pytest.fixture
def offline_records():
    return read_offline_run


@pytest.fixture
def offline_summary():
    return read_offline_summary


def _snapshot(folder: Path) -> dict[str, bytes]:
    """Every file under ``folder`` (relative path -> bytes)."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture
def snapshot():
    return _snapshot
