"""SAE training throughput from cached activations, in tokens per second (issue 13: >= 1M tokens/s on an H200).

    python scripts/bench_sae_throughput.py [--d 640] [--expansion 8] [--k 32] [--batch 2048] [--steps 40]
                                           [--warmup 5] [--tokens 262144] [--accelerator auto]

Writes a random activation cache of ``--tokens`` rows of width d (the cache layout of medinterp/sae/activations.py,
two shards) in a temporary folder, then trains a Matryoshka BatchTopK SAE (default fractions, the runner's
defaults: Gemma-3-270M's d = 640, expansion 8, k = 32) through ``train_sae`` on the shuffled ``TokenStream``
(memmap reads included, as in ``runners/sae.py``). A callback times the optimizer steps after the first
``--warmup`` (Lightning's start, the geometric median and allocator warm-up excluded). Prints tokens/s of
training and, separately, of reading the batches alone.
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import lightning as L
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from medinterp.sae import SAEConfig, SparseAutoencoder, TrainConfig, train_sae  # noqa: E402
from medinterp.sae.activations import ActivationStore, TokenStream  # noqa: E402
from medinterp.sae.config import DEFAULT_GROUP_FRACTIONS, group_sizes_from_fractions  # noqa: E402


class StepTimer(L.Callback):
    """Wall time from the start of batch ``warmup`` to the end of training (CUDA synchronised)."""

    def __init__(self, warmup: int):
        self.warmup, self.start, self.steps = warmup, None, 0

    def on_train_batch_start(self, trainer, module, batch, batch_idx):
        if trainer.global_step == self.warmup:
            _sync(module)
            self.start = time.perf_counter()

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
        if self.start is not None:
            self.steps += 1

    def on_train_end(self, trainer, module):
        _sync(module)
        self.elapsed = time.perf_counter() - self.start


def _sync(module) -> None:
    import torch

    if module.device.type == "cuda":
        torch.cuda.synchronize()


def random_cache(folder: Path, n: int, d: int) -> ActivationStore:
    """A two-shard activation cache of n random rows (layer 0)."""
    x = np.random.default_rng(0).normal(size=(n, d)).astype(np.float32)
    (folder / "layer_0").mkdir(parents=True)
    half = n // 2
    np.save(folder / "layer_0" / "shard_00000.npy", x[:half])
    np.save(folder / "layer_0" / "shard_00001.npy", x[half:])
    meta = {"layers": [0], "d": d, "n_tokens": n, "shard_sizes": [half, n - half],
            "mean_squared_norm": {"0": float(np.square(x).sum(1).mean())}}
    (folder / "meta.json").write_text(json.dumps(meta))
    return ActivationStore(folder)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--d", type=int, default=640)
    p.add_argument("--expansion", type=int, default=8)
    p.add_argument("--k", type=int, default=32)
    p.add_argument("--batch", type=int, default=2048)
    p.add_argument("--steps", type=int, default=40)
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--tokens", type=int, default=262144)
    p.add_argument("--accelerator", default="auto")
    a = p.parse_args()
    m = a.d * a.expansion
    with tempfile.TemporaryDirectory() as tmp:
        store = random_cache(Path(tmp), a.tokens, a.d)
        stream = TokenStream(store, 0, a.batch, seed=0, scale=store.scale(0))
        t0 = time.perf_counter()
        for _ in range(a.steps):
            next(stream)
        read = a.steps * a.batch / (time.perf_counter() - t0)
        config = SAEConfig(a.d, m, a.k, "batchtopk", group_sizes_from_fractions(m, DEFAULT_GROUP_FRACTIONS))
        timer = StepTimer(a.warmup)
        cfg = TrainConfig(warmup_steps=a.warmup, threshold_start_step=a.warmup, dead_tokens=10 * a.batch)
        train_sae(SparseAutoencoder(config, seed=0), TokenStream(store, 0, a.batch, scale=store.scale(0)), cfg,
                  max_steps=a.warmup + a.steps, callbacks=[timer], accelerator=a.accelerator, progress=False,
                  log_every_n_steps=a.steps)
    print(f"d={a.d} latents={m} k={a.k} batch={a.batch}: training {timer.steps * a.batch / timer.elapsed:,.0f} "
          f"tokens/s ({timer.steps} steps in {timer.elapsed:.2f} s); reading batches alone {read:,.0f} tokens/s")


if __name__ == "__main__":
    main()
