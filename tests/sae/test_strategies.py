"""SAE training under DDP (2 CPU processes, gloo) equals the single-process run on the same batches.

Per-token TopK and no geometric-median init make the step a function of the union batch alone: the MSE is a
mean over tokens (DDP averages the ranks' gradients), the dead-latent counters are reduced over ranks. (BatchTopK
selects per rank, k x its own tokens, and the geometric median is rank 0's half batch: such runs differ from the
single-process run by design, not by a bug; docs/sae.md.) DeepSpeed ZeRO-2 runs the same harness on the CPU
(medinterp/sae/trainer_strategy.py): its fp32 master copy must see the decoder renormalisation, or the rows drift
off unit norm and the weights part from the single run."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

pytest.importorskip("lightning")

HERE = Path(__file__).parent


def _two_processes(tmp_path, strategy: str, *checkpoint: str, name: str | None = None) -> dict:
    """ddp_train.py on two ranks (``checkpoint``: its optional <checkpoint_dir> <steps>); rank 0's weights."""
    out = tmp_path / f"{name or strategy}.pt"
    subprocess.run([sys.executable, str(HERE / "ddp_train.py"), str(out), strategy, "2", *checkpoint], check=True,
                   timeout=300, cwd=HERE.parents[1], env={**os.environ, "OMP_NUM_THREADS": "1"})
    return torch.load(out)


@pytest.mark.slow  # two processes (Lightning's ddp launcher)
@pytest.mark.parametrize("strategy", ["ddp", "deepspeed"])
def test_two_processes_equal_one_process(tmp_path, strategy):
    if strategy == "deepspeed":
        pytest.importorskip("deepspeed")
    sys.path.insert(0, str(HERE))
    from ddp_train import fresh, train

    single = train()
    two = _two_processes(tmp_path, strategy)
    assert (single.W_dec - fresh().W_dec).abs().max() > 1e-3  # training moved the weights: equality is not trivial
    assert torch.allclose(two["W_dec"].norm(dim=1), torch.ones(len(two["W_dec"])), atol=1e-5)
    for name, value in single.state_dict().items():
        assert torch.allclose(two[name], value, atol=1e-5), name


@pytest.mark.slow  # two runs of two processes
def test_a_deepspeed_run_resumes_from_its_checkpoint_folder(tmp_path):
    """Under DeepSpeed a checkpoint is a folder (the runner once read only files, so a killed DeepSpeed run started
    over): its step is read, and a 2-rank ZeRO-2 run stopped at step 8 and resumed from the folder ends where the
    uninterrupted single-process run ends (weights and Adam state restored, partitioned)."""
    pytest.importorskip("deepspeed")
    sys.path.insert(0, str(HERE))
    from ddp_train import STEPS, train

    from medinterp.sae import checkpoint_step

    ckpt = tmp_path / "checkpoints"
    first = _two_processes(tmp_path, "deepspeed", str(ckpt), "8", name="first")
    assert (ckpt / "last.ckpt").is_dir() and checkpoint_step(ckpt / "last.ckpt") == 8 < STEPS
    resumed = _two_processes(tmp_path, "deepspeed", str(ckpt), "8", name="resumed")
    single = train()
    assert (first["W_dec"] - single.W_dec).abs().max() > 1e-3  # the first run stopped early: equality is not trivial
    for name, value in single.state_dict().items():
        assert torch.allclose(resumed[name], value, atol=1e-5), name


def test_zero3_is_refused_in_one_line():
    from medinterp.errors import MedinterpError
    from medinterp.sae import SAEConfig, SparseAutoencoder, TrainConfig, train_sae

    with pytest.raises(MedinterpError, match=r"cannot use 'deepspeed_stage_3'.*valid: auto, ddp, deepspeed,"):
        train_sae(SparseAutoencoder(SAEConfig(4, 8, 2, "topk")), [torch.zeros(4, 4)], TrainConfig(warmup_steps=0),
                  max_steps=1, strategy="deepspeed_stage_3", accelerator="cpu", progress=False)
