"""Train the tiny SAE of test_strategies.py under a Lightning strategy and save its weights (rank 0).

    python tests/sae/ddp_train.py <out.pt> <strategy> <devices> [<checkpoint_dir> <steps>]

With a checkpoint folder: train ``steps`` steps saving ``<checkpoint_dir>/last.ckpt`` at the last one, or, when
that checkpoint is there, resume from it up to STEPS (a DeepSpeed checkpoint is a folder; the test of resuming).
Run as a script because Lightning's ``ddp`` launcher starts the other ranks by running this file again."""
from __future__ import annotations

import os
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from medinterp.sae import SAEConfig, SparseAutoencoder, TrainConfig, checkpoint_step, train_sae  # noqa: E402

D, M, K, TOKENS, BATCH = 16, 48, 3, 512, 64
STEPS = int(os.environ.get("SAE_DDP_STEPS", 12))
SETTINGS = TrainConfig(lr=3e-3, warmup_steps=2, geometric_median_init=False)


def data() -> torch.Tensor:
    return torch.randn(TOKENS, D, generator=torch.Generator().manual_seed(0)) + 2


def fresh() -> SparseAutoencoder:
    return SparseAutoencoder(SAEConfig(D, M, K, "topk"), seed=0)


def train(strategy: str = "auto", devices: int = 1, checkpoint_dir: str | None = None, steps: int = STEPS
          ) -> SparseAutoencoder:
    """``devices`` ranks; rank r reads rows r, r + devices, ... of the data, BATCH / devices per step, so the
    ranks' step-s batches together are rows [s BATCH, (s + 1) BATCH): the single-process batch. A plain list of
    batches is each rank's own (Lightning adds a DistributedSampler, which shuffles, only to a DataLoader)."""
    rank, per_rank = int(os.environ.get("LOCAL_RANK", "0")), BATCH // devices
    mine = data()[rank::devices]
    batches = [mine[i:i + per_rank] for i in range(0, len(mine), per_rank)]
    ckpt = Path(checkpoint_dir) / "last.ckpt" if checkpoint_dir else None
    resume = ckpt is not None and bool(checkpoint_step(ckpt))  # as runners/sae.py decides
    # a resumed run starts from other weights: only the checkpoint's restore can make it equal the straight run
    sae = SparseAutoencoder(SAEConfig(D, M, K, "topk"), seed=99) if resume else fresh()
    return train_sae(sae, batches, SETTINGS, max_steps=STEPS if resume else steps, accelerator="cpu",
                     devices=devices, strategy=strategy, progress=False, seed=0, checkpoint_dir=checkpoint_dir,
                     checkpoint_every=steps, ckpt_path=ckpt if resume else None)


if __name__ == "__main__":
    out, strategy, devices = sys.argv[1], sys.argv[2], int(sys.argv[3])
    sae = train(strategy, devices, *(sys.argv[4:5]), *(int(v) for v in sys.argv[5:6]))
    if int(os.environ.get("LOCAL_RANK", "0")) == 0:
        torch.save({k: v.detach().clone() for k, v in sae.state_dict().items()}, out)
