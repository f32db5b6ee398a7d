"""SAE codes of whole prompts: the max over a prompt's SAE tokens of each latent (the catalogue's activations).

Prompts are tokenized as the model sees them (special tokens, padding on the tokenizer's side), captured at the
layer through the one capture path, and encoded with the SAE's inference rule after the training scale s. The
SAE tokens are the real tokens except the first (packing.token_mask), as in training.

Image prompts of a vision-language model (:func:`image_prompt_codes`, the catalogue of an image prompt set such as
``synthetic_xray``) go through the multimodal backbone (medinterp/capture/images.py) and take the max over their
SAE tokens of the run's token types (activations.image_sae_mask: ``image``, ``text`` or ``all``, the first real
token dropped), as the activation cache reads them.
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from tqdm.auto import tqdm

from medinterp.capture.images import capture_image_batch, encode_images
from medinterp.capture.residual import capture_batch
from medinterp.capture.tokens import encode
from medinterp.sae.activations import image_sae_mask
from medinterp.sae.model import SparseAutoencoder
from medinterp.sae.packing import token_mask


@torch.inference_mode()
def prompt_codes(handle, sae: SparseAutoencoder, texts: Sequence[str], layer: int, scale: float = 1.0,
                 batch_size: int = 16, progress: bool = True, desc: str = "SAE prompt codes") -> np.ndarray:
    """(len(texts), m) float32: per prompt, the max over its SAE tokens of each latent's activation (0 for a
    prompt of one token)."""
    out = np.zeros((len(texts), sae.config.n_latents), dtype=np.float32)
    for start in tqdm(range(0, len(texts), batch_size), desc=desc, unit="batch", disable=not progress):
        batch = encode(handle.tokenizer, list(texts[start:start + batch_size]))
        hidden = capture_batch(handle, batch, [layer], None)[0]  # (B, T, d)
        keep = token_mask(batch.attention_mask).to(hidden.device)  # (B, T)
        out[start:start + keep.shape[0]] = _max_codes(sae, hidden, keep, scale)
    return out


def _max_codes(sae: SparseAutoencoder, hidden: torch.Tensor, keep: torch.Tensor, scale: float) -> np.ndarray:
    """(B, m): per prompt of ``hidden`` (B, T, d), the max of each latent over the positions ``keep`` (B, T)."""
    device = sae.W_enc.device
    keep = keep.to(hidden.device)
    f = sae.encode(hidden[keep].float().to(device) * scale)  # (n, m)
    rows = keep.nonzero()[:, 0].to(device)  # the prompt of each SAE token
    codes = torch.zeros(keep.shape[0], f.shape[1], device=device).scatter_reduce_(
        0, rows[:, None].expand_as(f), f, "amax")  # (B, m), codes >= 0 so the zeros start is the identity
    return codes.cpu().numpy()


@torch.inference_mode()
def image_prompt_codes(handle, sae: SparseAutoencoder, prompts: Sequence, layer: int, scale: float = 1.0,
                       tokens: str = "all", batch_size: int = 8, progress: bool = True,
                       desc: str = "SAE image prompt codes") -> np.ndarray:
    """(len(prompts), m) float32: per image prompt (``.text`` and ``.image``), the max over its SAE tokens of type
    ``tokens`` of each latent's activation."""
    out = np.zeros((len(prompts), sae.config.n_latents), dtype=np.float32)
    for start in tqdm(range(0, len(prompts), batch_size), desc=desc, unit="batch", disable=not progress):
        batch = encode_images(handle, prompts[start:start + batch_size])
        keep = image_sae_mask(batch, handle.tokenizer.all_special_ids, tokens)  # (B, T)
        hidden = capture_image_batch(handle, batch, [layer], None)[0]  # (B, T, d)
        out[start:start + len(keep)] = _max_codes(sae, hidden, keep, scale)
    return out


__all__ = ["image_prompt_codes", "prompt_codes"]
