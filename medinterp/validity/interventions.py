"""Interventions on a set of decoder blocks, as context managers: inside the ``with`` block every forward of
the model runs intervened; on exit the model is exactly as before (hooks and block replacements are removed
in ``finally``, medinterp/hooks.py).

- :func:`identity`: each block replaced by the identity (zero-ablation of the block's update to the residual
  stream; the method=ablation lesion, applied to several blocks at once);
- :func:`mean_update`: each block's update replaced by its mean over reference tokens, output = input + ū_b
  (mean-ablation, the less destructive baseline of Wang et al. 2022; ``ū_b`` from :func:`mean_updates`);
- :func:`steer`: ``alpha · v_b`` added to each block's output at every position (activation addition:
  Turner et al. 2023; with ``v_b`` a difference of class means, :func:`class_mean_direction`, as in
  Li et al. 2023 and Marks & Tegmark 2023).

Block ``b`` writes read-out ``b + 1`` (medinterp/methods/base.py), so a direction measured at read-out
``b + 1`` is the one to add at block ``b``.
"""
from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from contextlib import ExitStack, contextmanager

import torch

from medinterp.errors import MedinterpError
from medinterp.hooks import add, forward_hooks, record_update, replace_by_identity
from medinterp.models import ModelHandle
from medinterp.models.arch import BoundModel
from medinterp.validity.draws import check_blocks


@contextmanager
def identity(parts: BoundModel, blocks: Sequence[int]) -> Iterator[None]:
    """Every block in ``blocks`` returns its input (:func:`medinterp.hooks.replace_by_identity`)."""
    with ExitStack() as stack:
        for b in check_blocks(blocks, len(parts.layers)):
            stack.enter_context(replace_by_identity(parts, b))
        yield


@contextmanager
def mean_update(parts: BoundModel, updates: Mapping[int, torch.Tensor]) -> Iterator[None]:
    """Block ``b`` returns input + ``updates[b]`` (D,) for every ``b`` in ``updates`` (mean-ablation)."""
    blocks = check_blocks(list(updates), len(parts.layers))
    with identity(parts, blocks), forward_hooks([(parts.layers[b], add(updates[b])) for b in blocks]):
        yield


@contextmanager
def steer(parts: BoundModel, directions: Mapping[int, torch.Tensor], alpha: float) -> Iterator[None]:
    """Add ``alpha * directions[b]`` (D,) to the output of block ``b`` at every position (``alpha = 0``: no change)."""
    blocks = check_blocks(list(directions), len(parts.layers))
    if alpha == 0:  # the intact model, not a model plus a zero vector
        yield
        return
    with forward_hooks([(parts.layers[b], add(alpha * directions[b])) for b in blocks]):
        yield


@torch.inference_mode()
def mean_updates(handle: ModelHandle, texts: Sequence[str], blocks: Sequence[int], batch_size: int = 16
                 ) -> dict[int, torch.Tensor]:
    """ū_b = mean over the real tokens of ``texts`` (padding and the BOS token left out: its residual norms are
    outliers, the attention sink) of block b's update output − input, (D,) float32, per block."""
    parts = handle.parts
    chosen = check_blocks(blocks, handle.n_layers)
    if not texts:
        raise MedinterpError("mean_updates: no reference texts to average the blocks' updates over")
    sums: dict[int, torch.Tensor] = {}
    count = 0
    tok = handle.tokenizer
    for i in range(0, len(texts), batch_size):
        enc = tok(list(texts[i:i + batch_size]), padding=True, return_tensors="pt").to(handle.device)
        mask = enc["attention_mask"].bool()
        if tok.bos_token_id is not None:
            mask &= enc["input_ids"] != tok.bos_token_id
        with forward_hooks([(parts.layers[b], record_update(sums, b, mask)) for b in chosen]):
            handle.model(**enc)
        count += int(mask.sum())
    if count == 0:
        raise MedinterpError("mean_updates: the reference texts have no tokens besides BOS and padding")
    return {b: (sums[b] / count).float() for b in chosen}


def class_mean_direction(a_ND: torch.Tensor, b_MD: torch.Tensor) -> torch.Tensor:
    """mean(a) − mean(b), (D,): the direction from class b's centroid to class a's (float32)."""
    if a_ND.ndim != 2 or b_MD.ndim != 2 or a_ND.shape[1] != b_MD.shape[1] or not len(a_ND) or not len(b_MD):
        raise MedinterpError(f"class_mean_direction: need two non-empty (n, D) arrays with the same D; "
                             f"got {tuple(a_ND.shape)} and {tuple(b_MD.shape)}")
    return (a_ND.double().mean(0) - b_MD.double().mean(0)).float()
