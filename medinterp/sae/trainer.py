"""Train an SAE from any iterable of activation batches, in the manner of dictionary_learning's ``trainSAE``.

``batches`` is anything that yields (tokens, d) tensors (or tuples whose first item is one): a list, a
generator, a torch DataLoader, the activation cache's reader. A re-iterable source (a list, a DataLoader) is
cycled until ``max_steps``; a one-shot iterator (a generator) is read once, so training stops at ``max_steps``
or when it runs out, whichever comes first; ``max_steps=None`` is one pass over the data.

Lightning runs the loop (lightning_module.py), so the same call runs on one CPU, one GPU, or under
``strategy="ddp"`` / ``"deepspeed"`` with ``devices=N``; ``logger`` takes any Lightning logger (W&B: the runner
builds it), ``checkpoint_dir`` keeps the last checkpoint every ``checkpoint_every`` steps, and ``ckpt_path``
resumes from one (weights, Adam state, step, dead-latent counters and threshold). Under DeepSpeed a checkpoint is a
folder, not a file; :func:`checkpoint_step` reads the step of either.
"""
from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path

import lightning as L
import torch
from torch.utils.data import DataLoader

from medinterp.errors import MedinterpError
from medinterp.sae.lightning_module import SAELightningModule
from medinterp.sae.model import SparseAutoencoder
from medinterp.sae.train_config import TrainConfig
from medinterp.sae.trainer_strategy import sae_strategy
from medinterp.validation import check_positive_int

log = logging.getLogger(__name__)


def checkpoint_step(path: str | Path) -> int | None:
    """The global step of the Lightning checkpoint at ``path``; None when there is none.

    A file (one process, DDP) holds Lightning's whole state; a DeepSpeed checkpoint is a folder whose
    ``<tag>/mp_rank_00_model_states.pt`` holds it beside the partitioned weights and optimizer states.
    A folder without that file (a save killed midway) is one line, never a silent fresh start."""
    path = Path(path)
    if path.is_dir():
        states = sorted(path.glob("*/mp_rank_00_model_states.pt"))
        if not states:
            raise MedinterpError(f"SAE checkpoint folder {path} holds no DeepSpeed model states "
                                 f"(<tag>/mp_rank_00_model_states.pt): remove it to train from the start")
        path = states[0]
    elif not path.is_file():
        return None
    return int(torch.load(path, map_location="cpu", weights_only=False)["global_step"])


class _Batches:
    """One iterable over the batches (re-iterable when the source is)."""

    def __init__(self, source: Iterable):
        self.source = source

    def __iter__(self):
        return iter(self.source)


def train_sae(sae: SparseAutoencoder, batches: Iterable, cfg: TrainConfig | None = None, *,
              max_steps: int | None = None, logger=False, callbacks: Sequence = (),
              checkpoint_dir: str | Path | None = None, checkpoint_every: int = 1000,
              ckpt_path: str | Path | None = None, accelerator: str = "auto", devices="auto",
              strategy="auto", precision="32-true", log_every_n_steps: int = 50,
              progress: bool = True, seed: int | None = None) -> SparseAutoencoder:
    """Train ``sae`` in place on ``batches`` with ``cfg`` and return it (its threshold set for BatchTopK)."""
    cfg = cfg or TrainConfig()
    check_positive_int("max_steps", max_steps, allow_none=True)
    sae.require_trainable()
    if sae.config.activation == "batchtopk" and max_steps is not None and max_steps <= cfg.threshold_start_step:
        raise MedinterpError(f"The SAE training setting 'threshold_start_step' ({cfg.threshold_start_step}) must be "
                             f"below max_steps ({max_steps}): the inference threshold would never be estimated.")
    if cfg.k_anneal_steps:
        if sae.config.k >= sae.config.d:
            raise MedinterpError(f"The SAE training setting 'k_anneal_steps' anneals k from d = {sae.config.d} down "
                                 f"to k = {sae.config.k}: it needs k < d (or k_anneal_steps: null).")
        if sae.config.activation == "batchtopk" and cfg.k_anneal_steps > cfg.threshold_start_step:
            raise MedinterpError(f"The SAE training setting 'k_anneal_steps' ({cfg.k_anneal_steps}) must be at most "
                                 f"threshold_start_step ({cfg.threshold_start_step}): the inference threshold "
                                 f"must estimate the final k's cut-off.")
    if cfg.decay_start is not None and max_steps is None:
        raise MedinterpError("The SAE training setting 'decay_start' needs max_steps (the decay ends at the last "
                             "step).")
    if seed is not None:
        L.seed_everything(seed, verbose=False)
    once = isinstance(batches, Iterator)  # a generator or other one-shot iterator (a list or DataLoader is not)
    if not isinstance(batches, DataLoader):  # Lightning reads a list as several loaders; a DataLoader stays bare
        batches = _Batches(batches)         # (Lightning gives each rank its DistributedSampler)
    callbacks = list(callbacks)
    if checkpoint_dir is not None:
        from lightning.pytorch.callbacks import ModelCheckpoint

        check_positive_int("checkpoint_every", checkpoint_every)
        callbacks.append(ModelCheckpoint(dirpath=str(checkpoint_dir), every_n_train_steps=checkpoint_every,
                                         save_last=True, save_top_k=0))
    strategy = sae_strategy(strategy, accelerator)
    trainer = L.Trainer(max_steps=-1 if max_steps is None else max_steps,
                        max_epochs=1 if once or max_steps is None else -1,
                        accelerator=accelerator, devices=devices, strategy=strategy, precision=precision,
                        logger=logger, callbacks=callbacks, enable_checkpointing=checkpoint_dir is not None,
                        enable_progress_bar=progress, enable_model_summary=False, log_every_n_steps=log_every_n_steps,
                        default_root_dir=None if checkpoint_dir is None else str(checkpoint_dir),
                        gradient_clip_val=cfg.grad_clip or None, num_sanity_val_steps=0)
    module = SAELightningModule(sae, cfg)
    trainer.fit(module, train_dataloaders=batches, ckpt_path=None if ckpt_path is None else str(ckpt_path))
    if sae.config.activation == "batchtopk" and not sae.threshold_is_set:
        log.warning("SAE training ended after %d steps, before the inference threshold was estimated "
                    "(threshold_start_step=%d): inference encodes with plain ReLU", trainer.global_step,
                    cfg.threshold_start_step)
    return sae


__all__ = ["checkpoint_step", "train_sae"]
