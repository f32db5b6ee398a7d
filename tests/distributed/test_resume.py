"""A run killed with SIGKILL mid-way and started again with the same config skips the finished batches and ends
with the table of an uninterrupted run: model batches from their checkpoints, capture batches from the activation
cache's partial entry (their one copy)."""
from __future__ import annotations

import json
import signal
import subprocess
import sys
import time

import pytest
from helpers import ROOT
from launch_helpers import env_for, make_cache, map_cmd, read_rows, run

ARGS = ["model=tiny_llama", "domain=disease", "method=saliency", "method.max_prompts=24", "batch_size=1",
        "method.n_boot=20", "plots=false"]


@pytest.mark.slow  # three runs of runners/map.py in subprocesses, one killed
def test_killed_run_resumes_to_identical_results(tmp_path, cache_dir):
    whole = tmp_path / "whole"
    run(map_cmd(*ARGS, f"cache_dir={make_cache(tmp_path / 'c1', cache_dir)}", f"hydra.run.dir={whole}"), tmp_path)

    cache = make_cache(tmp_path / "c2", cache_dir)
    cmd = map_cmd(*ARGS, f"cache_dir={cache}", f"hydra.run.dir={tmp_path / 'killed'}")
    proc = subprocess.Popen(cmd, env=env_for(tmp_path), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while len(list(cache.glob("resume/*/*.pkl"))) < 4:
        assert proc.poll() is None and time.time() < deadline, "the run ended before it could be killed"
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    finished = len(list(cache.glob("resume/*/*.pkl")))
    assert 4 <= finished < 24 and not (tmp_path / "killed" / "per_layer.csv").exists()

    resumed = tmp_path / "resumed"  # a new output folder: the checkpoints are keyed by the config, not the folder
    run(map_cmd(*ARGS, f"cache_dir={cache}", f"hydra.run.dir={resumed}"), tmp_path)
    summary = json.loads((resumed / "summary.json").read_text())
    assert summary["strategy"]["resumed_batches"] >= finished and summary["strategy"]["batches"] == 24
    assert read_rows(resumed / "per_layer.csv") == read_rows(whole / "per_layer.csv")  # identical, as text
    assert not list(cache.glob("resume/*"))  # cleared once the cell was written


UMAP_ARGS = ["model=tiny_llama", "domain=drugs", "method=umap", "templates=1", "batch_size=8", "method.n_boot=20",
             "method.n_perm=2", "method.n_jobs=1", "plots=false", "logger=none", "report=false"]  # n_jobs=1: no pool
KILL_AT = 10  # the capture batch whose forward pass the killed run never finishes
KILLER = f"""
import os, signal, sys
sys.path.insert(0, {str(ROOT / 'tests')!r})
from helpers import run_cell_in_process
from medinterp.methods.umap_geometry import UmapGeometry
run_unit = UmapGeometry.run_unit
def killed_at(self, handle, work, i):
    if i == {KILL_AT}:
        os.kill(os.getpid(), signal.SIGKILL)
    return run_unit(self, handle, work, i)
UmapGeometry.run_unit = killed_at
run_cell_in_process(sys.argv[2:], sys.argv[1])
"""


@pytest.mark.slow  # three runs in subprocesses, one killed
def test_a_capture_killed_midway_resumes_from_the_partial_cache_entry(tmp_path, cache_dir):
    whole = tmp_path / "whole"
    run(map_cmd(*UMAP_ARGS, f"cache_dir={make_cache(tmp_path / 'c1', cache_dir)}", f"hydra.run.dir={whole}"), tmp_path)

    cache = make_cache(tmp_path / "c2", cache_dir)
    log = tmp_path / "killed.log"
    with open(log, "w") as out:  # a file, not a pipe: nothing the killed process leaves can hold it open
        killed = subprocess.run([sys.executable, "-c", KILLER, str(tmp_path / "killed"), *UMAP_ARGS,
                                 f"cache_dir={cache}"], cwd=ROOT, env=env_for(tmp_path), stdout=out, stderr=out,
                                timeout=300)
    assert killed.returncode == -signal.SIGKILL, log.read_text()[-3000:]
    [record] = cache.glob("activations/*/*/*/last.partial.json")
    assert len(json.loads(record.read_text())["batches"]) == KILL_AT
    assert not list(cache.glob("resume/*/*.pkl"))  # a capture batch is written once: into the cache, not a pickle

    resumed = tmp_path / "resumed"
    run(map_cmd(*UMAP_ARGS, f"cache_dir={cache}", f"hydra.run.dir={resumed}"), tmp_path)
    summary = json.loads((resumed / "summary.json").read_text())
    assert summary["strategy"]["resumed_batches"] == KILL_AT
    assert summary["strategy"]["batches"] == json.loads((whole / "summary.json").read_text())["strategy"]["batches"]
    assert read_rows(resumed / "per_layer.csv") == read_rows(whole / "per_layer.csv")  # identical, as text
    assert not list(cache.glob("activations/*/*/*/last.partial.*")) and not list(cache.glob("resume/*"))
