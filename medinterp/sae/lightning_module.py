"""The LightningModule that trains an SAE (any strategy Lightning offers: single device, DDP, DeepSpeed).

One training step on a batch x (n, d) of activations:
1. (first step only) b_dec <- geometric median of x (geometric_median.py), broadcast from rank 0 under DDP;
2. pre = encoder(x); f = the training sparsity rule (top-k or batch top-k, model.py) with k annealed from d
   over ``k_anneal_steps`` when set (schedule.py);
3. tokens-since-fired counters and the dead mask (training_state.py; fired/n reduced over ranks);
4. loss = sum_g w_g MSE_g + alpha AuxK (objective.py);
5. after the step counter passes ``threshold_start_step`` (BatchTopK only): the threshold EMA;
6. backward; the decoder gradient's component along each row is removed (a hook on W_dec's gradient, so it
   acts before DDP averages or DeepSpeed ZeRO-2 partitions the gradient: the projection is linear and every rank
   holds the same W_dec, so projecting each rank's gradient equals projecting their mean);
7. the total gradient norm is clipped to ``grad_clip`` (configure_gradient_clipping);
8. Adam step with linear warm-up (schedule.py); decoder rows renormalised to unit norm (optimizer_step), in the
   module and in DeepSpeed's fp32 master copy (master_weights.py; trainer_strategy.py for DeepSpeed on the CPU).

Logged per step (W&B or any Lightning logger): ``train/loss``, ``train/mse_g{i}`` (each prefix's MSE, i = 0..G-1),
``train/auxk``, ``train/k`` (the annealed k), ``train/l0`` (mean kept latents per token), ``train/dead_fraction``
(dead for ``dead_tokens``), ``train/fvu`` (the batch's full reconstruction, about the mean: metrics.py),
``train/threshold`` (BatchTopK).
The curves are computed and logged only on the steps Lightning writes out (every ``log_every_n_steps``: a
``self.log`` call costs more than a small SAE's whole step). The counters live in buffers, so a Lightning
checkpoint resumes them with the weights.
"""
from __future__ import annotations

import lightning as L
import torch

from medinterp.sae.batches import batch_matrix
from medinterp.sae.decoder_norm import normalise_rows_, remove_parallel_gradient
from medinterp.sae.geometric_median import geometric_median
from medinterp.sae.master_weights import set_parameter_
from medinterp.sae.metrics import batch_fvu
from medinterp.sae.model import SparseAutoencoder
from medinterp.sae.objective import StepOutput, sae_objective
from medinterp.sae.schedule import annealed_k, lr_multiplier
from medinterp.sae.train_config import TrainConfig
from medinterp.sae.training_state import smallest_kept, update_threshold_, update_tokens_since_fired_


def _all_reduce(t: torch.Tensor, op) -> torch.Tensor:
    """In-place all-reduce over the ranks of an initialised process group; a no-op in one process."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.all_reduce(t, op=op)
    return t


class SAELightningModule(L.LightningModule):
    """Trains ``sae`` (a topk or batchtopk :class:`SparseAutoencoder`) with the settings ``cfg``."""

    def __init__(self, sae: SparseAutoencoder, cfg: TrainConfig | None = None):
        super().__init__()
        self.sae = sae
        self.cfg = cfg or TrainConfig()
        sae.require_trainable()
        self.register_buffer("tokens_since_fired", torch.zeros(sae.config.n_latents, dtype=torch.long))
        self.register_buffer("b_dec_initialised", torch.tensor(not self.cfg.geometric_median_init))

    def configure_optimizers(self):
        opt = torch.optim.Adam(self.sae.parameters(), lr=self.cfg.lr_for(self.sae.config.n_latents),
                               betas=(0.9, 0.999))
        total = self.trainer.max_steps if self.trainer.max_steps and self.trainer.max_steps > 0 else None
        warm, decay = self.cfg.warmup_steps, self.cfg.decay_start
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda step: lr_multiplier(step, warm, decay, total))
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}

    def on_fit_start(self) -> None:
        self._normalise_decoder()
        W = self.sae.W_dec
        self._projection = W.register_hook(lambda grad: remove_parallel_gradient(W.detach(), grad))

    def on_fit_end(self) -> None:
        self._projection.remove()

    @torch.no_grad()
    def _normalise_decoder(self) -> None:
        set_parameter_(self.sae.W_dec, normalise_rows_(self.sae.W_dec.detach()))  # in place, then the master copy

    @torch.no_grad()
    def _init_b_dec(self, x: torch.Tensor) -> None:
        median = geometric_median(x.to(self.sae.b_dec.dtype))
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            torch.distributed.broadcast(median, src=0)
        set_parameter_(self.sae.b_dec, median)
        self.b_dec_initialised.fill_(True)

    def training_step(self, batch, batch_idx):
        cfg, sae = self.cfg, self.sae
        x = batch_matrix(batch, sae.config.d).to(sae.W_enc.dtype)
        if not bool(self.b_dec_initialised):
            self._init_b_dec(x)
        pre = sae.pre_activations(x)  # (n, m)
        k = annealed_k(self.global_step, sae.config.k, sae.config.d, cfg.k_anneal_steps)
        f = sae.select_train(pre, k)  # (n, m)
        fired = _all_reduce((f > 0).any(0).to(torch.int32), torch.distributed.ReduceOp.MAX).bool()
        n_tokens = int(_all_reduce(torch.tensor(x.shape[0], device=x.device), torch.distributed.ReduceOp.SUM))
        update_tokens_since_fired_(self.tokens_since_fired, fired, n_tokens)
        dead = self.tokens_since_fired >= cfg.dead_tokens
        out = sae_objective(sae, x, pre, f, dead, cfg)
        if sae.config.activation == "batchtopk" and self.global_step > cfg.threshold_start_step:
            update_threshold_(sae, _all_reduce(smallest_kept(out.f), torch.distributed.ReduceOp.MIN),
                              cfg.threshold_beta)
        if (self.global_step + 1) % self.trainer.log_every_n_steps == 0:  # the steps Lightning writes out
            self._log_step(x, out, dead, k)
        return out.loss

    def _log_step(self, x: torch.Tensor, out: StepOutput, dead: torch.Tensor, k: int) -> None:
        sae = self.sae
        logs = {"train/loss": out.loss.detach(), "train/auxk": out.auxk, "train/k": float(k),
                "train/l0": (out.f > 0).sum(1).float().mean(), "train/dead_fraction": dead.float().mean(),
                "train/fvu": batch_fvu(x, out.x_hat)}
        logs.update({f"train/mse_g{i}": v for i, v in enumerate(out.group_mse)})
        if sae.config.activation == "batchtopk":
            logs["train/threshold"] = sae.threshold[0]
        self.log_dict(logs, on_step=True, on_epoch=False, batch_size=x.shape[0])
        self.log_dict({"l0": logs["train/l0"], "fvu": logs["train/fvu"]}, prog_bar=True, logger=False,
                      on_step=True, on_epoch=False, batch_size=x.shape[0])

    def configure_gradient_clipping(self, optimizer, gradient_clip_val=None, gradient_clip_algorithm=None) -> None:
        clip = self.cfg.grad_clip if gradient_clip_val is None else gradient_clip_val
        if clip:
            self.clip_gradients(optimizer, gradient_clip_val=clip,
                                gradient_clip_algorithm=gradient_clip_algorithm or "norm")

    def optimizer_step(self, *args, **kwargs) -> None:
        super().optimizer_step(*args, **kwargs)
        self._normalise_decoder()


__all__ = ["SAELightningModule"]
