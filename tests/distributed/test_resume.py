"""A run killed with SIGKILL mid-way and started again with the same config skips the finished batches and ends
with the table of an uninterrupted run."""
from __future__ import annotations

import json
import signal
import subprocess
import time

import pytest
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
