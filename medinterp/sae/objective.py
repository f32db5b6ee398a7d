"""The SAE training loss: Matryoshka reconstruction over nested prefixes plus the auxiliary top-k loss.

    L = sum_g w_g * MSE_g + alpha * AuxK                                        (weights: train_config.py)

MSE_g = mean over the n tokens of ||x - x_hat_g||^2, summed over the d dimensions, with x_hat_g the
reconstruction of prefix g (model.py). One group: the plain TopK / BatchTopK loss.

AuxK (Gao et al. 2024, appendix A.2): the latents that have not fired for ``dead_tokens`` tokens
(training_state.py) get a second chance. Each token keeps its k_aux = min(top_k_aux, n_dead) largest ReLU
pre-activations AMONG THE DEAD latents; they reconstruct the main model's error e = x - x_hat (detached) through
W_dec without bias:

    AuxK = mean_t ||e_t - a_t W_dec||^2 / mean_t ||e_t - mean(e)||^2

normalised by the error's variance about its mean (OpenAI's sparse_autoencoder, as dictionary_learning), so
alpha means the same at every scale; 0 when no latent is dead (or the error has zero variance). A dead latent
is never kept by the main rule, so its encoder and decoder weights get gradient only through this term.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from medinterp.sae.model import SparseAutoencoder
from medinterp.sae.train_config import TrainConfig


@dataclass
class StepOutput:
    """One training step's loss and what is logged: group_mse (G,), auxk (normalised, 0 without dead latents),
    f (n, m) the training latents, x_hat (n, d) the full reconstruction."""

    loss: torch.Tensor
    group_mse: torch.Tensor
    auxk: torch.Tensor
    f: torch.Tensor
    x_hat: torch.Tensor


def matryoshka_mse(sae: SparseAutoencoder, x: torch.Tensor, f: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """MSE of every nested prefix (G,) and the full reconstruction (n, d)."""
    recons = sae.decode_prefixes(f)
    mse = torch.stack([(x - r).square().sum(-1).mean() for r in recons])
    return mse, recons[-1]


def auxk_loss(sae: SparseAutoencoder, error: torch.Tensor, pre: torch.Tensor, dead: torch.Tensor,
              top_k_aux: int) -> torch.Tensor:
    """Normalised auxiliary loss of the error e (n, d, detached) from the dead latents (mask (m,)) of pre (n, m)."""
    n_dead = int(dead.sum())
    if n_dead == 0:
        return pre.new_zeros(())
    masked = torch.where(dead[None, :], pre.relu(), torch.full_like(pre, -torch.inf))
    values, index = masked.topk(min(top_k_aux, n_dead), dim=-1, sorted=False)  # (n, k_aux), all dead
    a = torch.zeros_like(pre).scatter(-1, index, values)
    recon = a @ sae.W_dec
    num = (error - recon).square().sum(-1).mean()
    den = (error - error.mean(0)).square().sum(-1).mean()
    return (num / den).nan_to_num(0.0, posinf=0.0)


def sae_objective(sae: SparseAutoencoder, x: torch.Tensor, pre: torch.Tensor, f: torch.Tensor,
                  dead: torch.Tensor, cfg: TrainConfig) -> StepOutput:
    """The loss of one batch x (n, d) given its pre-activations and training latents (n, m) and the dead mask."""
    group_mse, x_hat = matryoshka_mse(sae, x, f)
    weights = torch.tensor(cfg.weights_for(len(group_mse)), dtype=group_mse.dtype, device=group_mse.device)
    aux = auxk_loss(sae, (x - x_hat).detach(), pre, dead, cfg.top_k_aux or max(sae.config.d // 2, 1))
    loss = (weights * group_mse).sum() + cfg.auxk_alpha * aux
    return StepOutput(loss=loss, group_mse=group_mse.detach(), auxk=aux.detach(), f=f.detach(), x_hat=x_hat.detach())


__all__ = ["StepOutput", "auxk_loss", "matryoshka_mse", "sae_objective"]
