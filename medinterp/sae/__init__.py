"""Sparse autoencoders on the residual stream (issue 13; docs/sae.md).

config            SAEConfig (d, n_latents, k, activation topk | batchtopk | jumprelu, Matryoshka group_sizes),
                  group_sizes_from_fractions
model             SparseAutoencoder: encode (inference rule), select_train, decode, decode_prefixes, from_tensors
sparsity          topk_per_token, batch_topk, jumprelu
geometric_median  Weiszfeld's geometric median (the decoder bias's start)
decoder_norm      remove_parallel_gradient, normalise_rows_ (unit-norm decoder rows)
train_config      TrainConfig (lr, warm-up, k annealing, clipping, AuxK, threshold EMA, group weights)
objective         sae_objective: sum_g w_g MSE_g + alpha AuxK
training_state    dead-latent counters, the inference threshold's EMA
schedule          lr_multiplier (linear warm-up, optional linear decay), annealed_k (k from d down to k)
master_weights    set_parameter_: in-place writes that also reach DeepSpeed ZeRO's fp32 master copy
trainer_strategy  sae_strategy: DeepSpeed ZeRO-1/2 also on the CPU, ZeRO-3 refused
lightning_module  SAELightningModule (needs lightning)
trainer           train_sae(sae, batches, cfg, max_steps=...), checkpoint_step (needs lightning)
metrics           fvu (about the mean), explained_variance, l0, dead_fraction, ReconstructionStats (streaming)
evaluate          evaluate_sae(sae, batches) with the inference encoder
files             save_sae / load_sae in the dictionary_learning (ae.pt + config.json) and SAELens
                  (cfg.json + sae_weights.safetensors) layouts
corpus            the training text: ICD-10-CM, HPO, the prompt sets, the user's .txt / .jsonl files
packing           documents -> fixed-length contexts (BOS first); token_mask (non-pad, position 0 dropped)
activations       the sharded memmap activation cache (cache_activations, ActivationStore), TokenStream batches
splice            CE-loss recovered and KL with the reconstruction spliced in at the layer (zero ablation)
prompt_codes      per-prompt latent activations (max over its tokens)
catalogue         selectivity AUROC per label, the catalogue rows, the per-latent table, top tokens
figures           training curves, latent frequency histogram
run_state         SAERun: what the runner's stages share (runners/sae.py)
contexts          Contexts (tokens, residual activations, mask), capture_contexts(handle, ids, layer)
autointerp        interpret(sae, Contexts, interpreter): explanations and detection scores (balanced accuracy)
interpreters      KeywordInterpreter (offline: top tokens / keyword matching), LLMInterpreter (a judge's endpoint)
steering          steer(handle, sae, layer, targets, unrelated_prompts, judge): alpha x decoder row, success rate
stages            the runner's inputs to interpret / steer: windows of held-out contexts, chosen latents, targets

``train_sae`` and ``SAELightningModule`` are imported on first use (Lightning is the ``dist`` extra).
"""
from __future__ import annotations

from medinterp.sae.config import DEFAULT_GROUP_FRACTIONS, SAEConfig, group_sizes_from_fractions
from medinterp.sae.evaluate import evaluate_sae
from medinterp.sae.files import LAYOUTS, detect_layout, load_sae, save_sae
from medinterp.sae.metrics import ReconstructionMetrics, ReconstructionStats, dead_fraction, explained_variance, fvu, l0
from medinterp.sae.model import SparseAutoencoder
from medinterp.sae.train_config import TrainConfig

_LAZY = {"train_sae": "medinterp.sae.trainer", "checkpoint_step": "medinterp.sae.trainer",
         "SAELightningModule": "medinterp.sae.lightning_module"}


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'medinterp.sae' has no attribute {name!r}")


__all__ = ["DEFAULT_GROUP_FRACTIONS", "LAYOUTS", "ReconstructionMetrics", "ReconstructionStats", "SAEConfig",
           "SAELightningModule", "SparseAutoencoder", "TrainConfig", "checkpoint_step", "dead_fraction", "detect_layout",
           "evaluate_sae", "explained_variance", "fvu", "group_sizes_from_fractions", "l0", "load_sae", "save_sae",
           "train_sae"]
