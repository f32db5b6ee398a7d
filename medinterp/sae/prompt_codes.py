"""SAE codes of whole prompts: the max over a prompt's SAE tokens of each latent (the catalogue's activations).

Prompts are tokenized as the model sees them (special tokens, padding on the tokenizer's side), captured at the
layer through the one capture path, and encoded with the SAE's inference rule after the training scale s. The
SAE tokens are the real tokens except the first (packing.token_mask), as in training.
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from tqdm.auto import tqdm

from medinterp.capture.residual import capture_batch
from medinterp.capture.tokens import encode
from medinterp.sae.model import SparseAutoencoder
from medinterp.sae.packing import token_mask


@torch.inference_mode()
def prompt_codes(handle, sae: SparseAutoencoder, texts: Sequence[str], layer: int, scale: float = 1.0,
                 batch_size: int = 16, progress: bool = True, desc: str = "SAE prompt codes") -> np.ndarray:
    """(len(texts), m) float32: per prompt, the max over its SAE tokens of each latent's activation (0 for a
    prompt of one token)."""
    out = np.zeros((len(texts), sae.config.n_latents), dtype=np.float32)
    device = sae.W_enc.device
    for start in tqdm(range(0, len(texts), batch_size), desc=desc, unit="batch", disable=not progress):
        batch = encode(handle.tokenizer, list(texts[start:start + batch_size]))
        hidden = capture_batch(handle, batch, [layer], None)[0]  # (B, T, d)
        keep = token_mask(batch.attention_mask).to(hidden.device)  # (B, T)
        f = sae.encode(hidden[keep].float().to(device) * scale)  # (n, m)
        rows = keep.nonzero()[:, 0].to(device)  # the prompt of each SAE token
        codes = torch.zeros(keep.shape[0], f.shape[1], device=device).scatter_reduce_(
            0, rows[:, None].expand_as(f), f, "amax")  # (B, m), codes >= 0 so the zeros start is the identity
        out[start:start + keep.shape[0]] = codes.cpu().numpy()
    return out


__all__ = ["prompt_codes"]
