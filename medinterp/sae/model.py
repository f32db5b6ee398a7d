"""The sparse autoencoder module: plain TopK, BatchTopK and Matryoshka BatchTopK as configurations of one module.

Shapes: x (n, d) activations, pre/f (n, m) latents, W_enc (d, m), b_enc (m,), W_dec (m, d), b_dec (d,),
threshold (m,) — the layout SAELens and dictionary_learning's Matryoshka class share.

    pre   = (x - b_dec) W_enc + b_enc
    f     = sparsity(pre)               (sparsity.py: topk, batchtopk in training / threshold at inference, jumprelu)
    x_hat = f W_dec + b_dec

Matryoshka prefixes (config.py): prefix g reconstructs with the latents of groups 0..g only,
x_hat_g = f[:, :e_g] W_dec[:e_g] + b_dec, from the SAME f as the full dictionary (the batch top-k is taken over
the whole dictionary and truncated, as dictionary_learning's trainer does; SAELens instead re-applies the
selection inside each prefix).

Decoder rows are kept at unit norm during training (decoder_norm.py); the module itself does not require it,
so released SAEs with other row norms load and encode exactly. ``threshold`` is -1 until training estimates it
(dictionary_learning's "unset"): thresholding then equals ReLU.
"""
from __future__ import annotations

import torch
from torch import nn

from medinterp.errors import MedinterpError
from medinterp.sae.config import TRAINABLE, SAEConfig
from medinterp.sae.sparsity import batch_topk, jumprelu, topk_per_token


class SparseAutoencoder(nn.Module):
    """An SAE of :class:`SAEConfig`. ``seed`` fixes the initialisation: decoder rows uniform-random then
    normalised to unit norm, W_enc = W_dec^T (the tied initialisation of Gao et al. 2024), b_enc = b_dec = 0
    (training sets b_dec to the geometric median of a first batch)."""

    def __init__(self, config: SAEConfig, seed: int = 0):
        super().__init__()
        self.config = config
        d, m = config.d, config.n_latents
        gen = torch.Generator().manual_seed(seed)
        W_dec = torch.rand(m, d, generator=gen) * 2 - 1
        W_dec = W_dec / W_dec.norm(dim=1, keepdim=True)
        self.W_dec = nn.Parameter(W_dec)
        self.W_enc = nn.Parameter(W_dec.T.contiguous())  # (d, m) row-major: DeepSpeed broadcasts flat views
        self.b_enc = nn.Parameter(torch.zeros(m))
        self.b_dec = nn.Parameter(torch.zeros(d))
        self.register_buffer("threshold", torch.full((m,), -1.0))

    @classmethod
    def from_tensors(cls, config: SAEConfig, source: str, *, W_enc: torch.Tensor, b_enc: torch.Tensor,
                     W_dec: torch.Tensor, b_dec: torch.Tensor, threshold: torch.Tensor | float = -1.0
                     ) -> SparseAutoencoder:
        """An SAE with the given weights (converted to float32; ``threshold`` a scalar or (m,)). A tensor whose
        shape does not fit ``config`` stops with one line naming it and ``source`` (the file it came from)."""
        d, m = config.d, config.n_latents
        threshold = torch.as_tensor(threshold, dtype=torch.float32)
        if threshold.ndim == 0:
            threshold = threshold.expand(m)
        want = {"W_enc": (d, m), "b_enc": (m,), "W_dec": (m, d), "b_dec": (d,), "threshold": (m,)}
        got = {"W_enc": W_enc, "b_enc": b_enc, "W_dec": W_dec, "b_dec": b_dec, "threshold": threshold}
        for name, shape in want.items():
            if tuple(got[name].shape) != shape:
                raise MedinterpError(f"The SAE in {source} is malformed: {name} has shape {tuple(got[name].shape)}, "
                                     f"expected {shape} for d={d}, n_latents={m}.")
        sae = cls(config)
        with torch.no_grad():
            for name, tensor in got.items():
                getattr(sae, name).copy_(tensor.to(torch.float32))
        return sae

    # -- encoding ------------------------------------------------------------------------------------------
    def pre_activations(self, x: torch.Tensor) -> torch.Tensor:
        """(n, d) -> (n, m): (x - b_dec) W_enc + b_enc."""
        return (x.to(self.W_enc.dtype) - self.b_dec) @ self.W_enc + self.b_enc

    def select_train(self, pre: torch.Tensor, k: int | None = None) -> torch.Tensor:
        """The training sparsity rule on pre-activations (n, m): per-token top-k or batch top-k, with ``k``
        latents per token (default the config's; the trainer passes the annealed k, schedule.py)."""
        self.require_trainable()
        k = self.config.k if k is None else min(k, self.config.n_latents)
        if self.config.activation == "topk":
            return topk_per_token(pre, k)
        return batch_topk(pre, k)

    def require_trainable(self) -> None:
        """One line unless the SAE has a training rule (topk, batchtopk); a jumprelu SAE is inference only."""
        if self.config.activation not in TRAINABLE:
            raise MedinterpError(f"A {self.config.activation!r} SAE cannot be trained (inference only); valid: "
                                 f"{', '.join(TRAINABLE)}.")

    def select_infer(self, pre: torch.Tensor) -> torch.Tensor:
        """The inference sparsity rule: per-token top-k for topk SAEs, the threshold otherwise (batch-free:
        a token's code does not depend on the other tokens of its batch)."""
        if self.config.activation == "topk":
            return topk_per_token(pre, self.config.k)
        return jumprelu(pre, self.threshold)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """Inference latents f (n, m) of activations x (n, d)."""
        return self.select_infer(self.pre_activations(x))

    # -- decoding ------------------------------------------------------------------------------------------
    def decode(self, f: torch.Tensor) -> torch.Tensor:
        """(n, m) -> (n, d): f W_dec + b_dec."""
        return f @ self.W_dec + self.b_dec

    def decode_prefixes(self, f: torch.Tensor) -> list[torch.Tensor]:
        """The reconstruction of every nested prefix, [x_hat_0, ..., x_hat_{G-1}] each (n, d); the last is
        :meth:`decode` (f). Built cumulatively: x_hat_g = x_hat_{g-1} + f[:, s_g:e_g] W_dec[s_g:e_g]."""
        out, recon, start = [], self.b_dec.expand(f.shape[0], -1), 0
        for end in self.config.group_ends:
            recon = recon + f[:, start:end] @ self.W_dec[start:end]
            out.append(recon)
            start = end
        return out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The inference reconstruction x_hat (n, d) of x (n, d)."""
        return self.decode(self.encode(x))

    @property
    def threshold_is_set(self) -> bool:
        """Whether the inference threshold has been estimated (or loaded): no entry is the unset -1."""
        return bool((self.threshold >= 0).all())


__all__ = ["SparseAutoencoder"]
