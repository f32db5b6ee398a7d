"""medinterp.sae.wandb_curves: the training curves reach an offline W&B run, one series per logged key."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch

pytest.importorskip("lightning")
pytest.importorskip("wandb")

from medinterp.sae import SAEConfig, SparseAutoencoder, TrainConfig, train_sae  # noqa: E402
from medinterp.sae.wandb_curves import JOB_TYPE, training_wandb_logger  # noqa: E402
from medinterp.tracking import TrackerSettings  # noqa: E402

CURVES = ["train/loss", "train/mse_g0", "train/mse_g1", "train/mse_g2", "train/auxk", "train/l0",
          "train/dead_fraction", "train/fvu", "train/threshold"]


def test_tracking_off_gives_no_logger(tmp_path):
    for settings in (TrackerSettings(name="none"), TrackerSettings(mode="disabled")):
        assert training_wandb_logger(settings, tmp_path, name="x", group=None, config={}) is None


@pytest.mark.slow  # wandb's service process and `wandb leet inspect` (subprocesses)
def test_the_offline_run_holds_a_curve_per_group_l0_dead_fraction_and_fvu(tmp_path, monkeypatch):
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.delenv("WANDB_MODE", raising=False)  # auto: no key -> offline
    x = torch.randn(256, 16) + 3
    logger = training_wandb_logger(TrackerSettings(), tmp_path, name="tiny-sae", group="g",
                                   config={"sae": {"k": 2, "api_key": "sk-secret-123"}})
    train_sae(SparseAutoencoder(SAEConfig(16, 48, 2, "batchtopk", (8, 16, 24)), seed=0), [x],
              TrainConfig(warmup_steps=2, threshold_start_step=1, dead_tokens=256), max_steps=5, progress=False,
              log_every_n_steps=1, logger=logger)
    logger.experiment.finish()
    (run_dir,) = (tmp_path / "wandb").glob("offline-run-*")
    out = subprocess.run([sys.executable, "-m", "wandb", "leet", "inspect", "--json", str(run_dir)],
                         capture_output=True, text=True, timeout=120, check=True).stdout
    records = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
    text = json.dumps(records)
    history = [r for r in records if r.get("type") == "history" and "train/l0" in json.dumps(r)]
    assert len(history) == 5  # one history record per step
    for key in CURVES:
        assert f'"{key}"' in text, key
    assert JOB_TYPE in text and "tiny-sae-train" in text and "sk-secret-123" not in text
