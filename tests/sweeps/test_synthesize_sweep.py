"""runners/synthesize.py in sweeps: figures and findings can be skipped, tables are read once per process,
and a multirun writes one folder per job with that job's parameters."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from helpers import ROOT
from medinterp.maps.synthesis import MapParams, load_table, synthesize

GOLDEN = ROOT / "tests" / "data" / "golden"


def test_synthesize_can_skip_figures_and_findings_and_reuse_a_table(tmp_path):
    table = load_table(GOLDEN)
    (folder,) = synthesize("/not/read/when/a/table/is/given", tmp_path, MapParams(sigma=2.0), figures=False,
                           with_findings=False, table=table)
    assert sorted(p.name for p in folder.iterdir()) == ["knowledge_map.json"]
    assert json.loads((folder / "knowledge_map.json").read_text())["params"]["sigma"] == 2.0
    (folder,) = synthesize(GOLDEN, tmp_path / "b", figures=False)
    assert sorted(p.name for p in folder.iterdir()) == ["findings.json", "knowledge_map.json"]


def test_runner_caches_tables_across_jobs_of_one_process(monkeypatch):
    monkeypatch.syspath_prepend(str(ROOT / "runners"))
    import synthesize as runner  # runners/synthesize.py

    runner.cached_table.cache_clear()
    first = runner.cached_table((str(GOLDEN),))
    assert runner.cached_table((str(GOLDEN),)) is first and runner.cached_table.cache_info().hits == 1


@pytest.mark.slow  # a Hydra multirun of runners/synthesize.py in a subprocess
def test_multirun_writes_one_folder_per_job(tmp_path):
    out = tmp_path / "sweep"
    env = {**os.environ, "HYDRA_FULL_ERROR": "0", "WANDB_MODE": "disabled"}
    proc = subprocess.run([sys.executable, str(ROOT / "runners" / "synthesize.py"), "-m", f"runs={GOLDEN}",
                           "map.sigma=0.5,2", "map.percentile=60,75", "plots=false", "findings=false", f"out_dir={out}"],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    params = {p.name: json.loads((p / "golden" / "knowledge_map.json").read_text())["params"]
              for p in out.iterdir() if p.is_dir()}
    assert {k: (v["sigma"], v["percentile"]) for k, v in params.items()} == {
        "0": (0.5, 60), "1": (0.5, 75), "2": (2.0, 60), "3": (2.0, 75)}
    assert not list(out.rglob("*.png")) and not list(out.rglob("findings.json"))
