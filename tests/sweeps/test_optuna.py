"""The optional Optuna sweeper example (sweeps/sweep/optuna_map.yaml); skipped where the plugin is absent
(`pip install -c constraints.txt hydra-optuna-sweeper`; it is not part of the default environment)."""
from __future__ import annotations

import os
import subprocess
import sys

import pytest
import yaml

from helpers import ROOT

pytestmark = pytest.mark.slow  # an Optuna sweep of runners/synthesize.py in a subprocess
pytest.importorskip("hydra_plugins.hydra_optuna_sweeper", reason="hydra-optuna-sweeper is an optional extra")


def test_optuna_search_over_map_parameters(tmp_path):
    out = tmp_path / "optuna"
    env = {**os.environ, "HYDRA_FULL_ERROR": "0", "WANDB_MODE": "disabled", "PYTHONPATH": str(ROOT)}
    proc = subprocess.run([sys.executable, str(ROOT / "runners" / "synthesize.py"), "--config-dir", "sweeps",
                           "+sweep=optuna_map", f"runs={ROOT / 'tests' / 'data' / 'golden'}", f"out_dir={out}",
                           "hydra.sweeper.n_trials=3"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = yaml.safe_load((out / "optimization_results.yaml").read_text())
    assert 0 <= result["best_value"] <= 1 and set(result["best_params"]) == {"map.sigma", "map.percentile"}
    assert sorted(p.name for p in out.iterdir() if p.is_dir()) == ["0", "1", "2"]
