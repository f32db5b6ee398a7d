"""Residual-stream activations of packed contexts, streamed into a sharded on-disk cache (memmap), and read back
as SAE batches.

Capture uses the one capture path (medinterp/capture/residual.py ``capture_batch``, read-out l = residual stream
after l blocks, the forward stopped after the last requested layer) on batches of contexts; of each context the
SAE tokens (packing.token_mask: non-pad, position 0 dropped) are appended, context-major, to float32 shards:

    <folder>/meta.json                 layers, d, n_tokens, shard sizes, per layer the mean squared norm
    <folder>/layer_<l>/shard_<i>.npy   (rows, d) float32, ``shard_tokens`` rows each (the last: the rest)
    <folder>/index.npy                 (n_tokens, 2) int32: (context, position) of every row
    <folder>/token_ids.npy             (n_tokens,) int32: the token at that position
    <folder>/token_types.npy           (n_tokens,) uint8: 0 = text (image tokens of VLMs: 1, once they are read)

The folder is written as ``<folder>.partial`` and renamed into place once complete (a killed capture never looks
complete; the next run starts it again). Memory is bounded by one batch of contexts.

Scaling (``ActivationStore.scale``): s = sqrt(d / E||x||^2) over the store's tokens, so that E||s x||^2 = d
(SAELens's ``normalize_activations: expected_average_only_in``, dictionary_learning's ``normalize_activations``):
SAE hyperparameters then transfer across layers and models. Reconstructions go back to raw space as x_hat / s
(CE-loss recovered splices raw activations into the model); FVU is unchanged by the scaling (a ratio).
"""
from __future__ import annotations

import json
import shutil
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import torch
from numpy.lib.format import open_memmap
from tqdm.auto import tqdm

from medinterp.capture.residual import capture_batch
from medinterp.capture.tokens import TokenBatch, position_ids
from medinterp.errors import MedinterpError
from medinterp.sae.packing import token_mask

FORMAT_VERSION = 1
TEXT, IMAGE = 0, 1  # token types
DEFAULT_SHARD_TOKENS = 65_536


def token_batch(input_ids: torch.Tensor, mask: torch.Tensor) -> TokenBatch:
    """A TokenBatch of packed contexts (B, T) for the capture path (no reduction is read from it)."""
    last = (mask * torch.arange(mask.shape[1])).argmax(-1)
    return TokenBatch(input_ids, mask, position_ids(mask), last, mask.float() / mask.sum(-1, keepdim=True))


class ActivationStore:
    """A finished activation cache folder (see the module doc), read through memmaps."""

    def __init__(self, folder: str | Path):
        self.folder = Path(folder)
        try:
            self.meta = json.loads((self.folder / "meta.json").read_text())
        except (OSError, ValueError):
            raise MedinterpError(f"{self.folder}: not an activation cache (no readable meta.json)") from None
        self.layers: list[int] = list(self.meta["layers"])
        self.d: int = int(self.meta["d"])
        self.n_tokens: int = int(self.meta["n_tokens"])
        self.shard_sizes: list[int] = list(self.meta["shard_sizes"])
        self._shards: dict[int, list[np.ndarray]] = {}

    def shards(self, layer: int) -> list[np.ndarray]:
        if layer not in self.layers:
            raise MedinterpError(f"layer {layer} is not in the activation cache {self.folder} (layers {self.layers})")
        if layer not in self._shards:
            self._shards[layer] = [np.load(self.folder / f"layer_{layer}" / f"shard_{i:05d}.npy", mmap_mode="r")
                                   for i in range(len(self.shard_sizes))]
        return self._shards[layer]

    def rows(self, layer: int, index: np.ndarray) -> torch.Tensor:
        """Raw activations (len(index), d) float32 of the rows ``index`` (any order, across shards)."""
        index = np.asarray(index, dtype=np.int64)
        out = np.empty((len(index), self.d), dtype=np.float32)
        bounds = np.cumsum([0, *self.shard_sizes])
        shard_of = np.searchsorted(bounds, index, side="right") - 1
        for s, shard in enumerate(self.shards(layer)):
            where = np.nonzero(shard_of == s)[0]
            if len(where):
                local = index[where] - bounds[s]
                order = np.argsort(local)  # sequential reads within the shard
                out[where[order]] = shard[local[order]]
        return torch.from_numpy(out)

    def mean_squared_norm(self, layer: int) -> float:
        return float(self.meta["mean_squared_norm"][str(layer)])

    def scale(self, layer: int) -> float:
        """s = sqrt(d / E||x||^2): s x has mean squared norm d."""
        return float(np.sqrt(self.d / self.mean_squared_norm(layer)))

    def array(self, name: str) -> np.ndarray:
        """``index`` (n, 2), ``token_ids`` (n,) or ``token_types`` (n,)."""
        return np.load(self.folder / f"{name}.npy")

    def batches(self, layer: int, batch_size: int, scale: float = 1.0) -> Iterator[torch.Tensor]:
        """Every row in order, ``batch_size`` at a time, times ``scale`` (evaluation)."""
        for start in range(0, self.n_tokens, batch_size):
            yield self.rows(layer, np.arange(start, min(start + batch_size, self.n_tokens))) * scale


class TokenStream:
    """Shuffled training batches of one layer, without end: batch b is a pure function of (seed, b).

    Each epoch is a fresh permutation of the store's rows (``np.random.default_rng([seed, epoch])``), cut into
    n_tokens // batch_size batches (the rest of the epoch unused). ``start_batch`` skips to batch b without
    reading the ones before, so a run resumed at step b sees exactly the batches an uninterrupted run would.
    """

    def __init__(self, store: ActivationStore, layer: int, batch_size: int, seed: int = 0, scale: float = 1.0,
                 start_batch: int = 0):
        if store.n_tokens < batch_size:
            raise MedinterpError(f"sae.batch_size ({batch_size}) is larger than the {store.n_tokens} cached "
                                 f"training tokens; lower it or raise sae.train_tokens")
        self.store, self.layer, self.batch_size, self.seed, self.scale = store, layer, batch_size, seed, scale
        self.per_epoch = store.n_tokens // batch_size
        self.next_batch = start_batch
        self._perm: tuple[int, np.ndarray] | None = None

    def __iter__(self) -> TokenStream:
        return self

    def __next__(self) -> torch.Tensor:
        epoch, i = divmod(self.next_batch, self.per_epoch)
        if self._perm is None or self._perm[0] != epoch:
            self._perm = (epoch, np.random.default_rng([self.seed, epoch]).permutation(self.store.n_tokens))
        self.next_batch += 1
        index = self._perm[1][i * self.batch_size:(i + 1) * self.batch_size]
        return self.store.rows(self.layer, index) * self.scale


def cache_activations(handle, input_ids: torch.Tensor, mask: torch.Tensor, layers: Sequence[int], folder: str | Path,
                      batch_contexts: int = 8, shard_tokens: int = DEFAULT_SHARD_TOKENS,
                      progress: bool = True, desc: str = "SAE activations") -> ActivationStore:
    """Capture the SAE tokens of ``input_ids`` / ``mask`` (n, T) at ``layers`` into ``folder`` (reused when it
    is already complete) and return the store."""
    folder = Path(folder)
    if (folder / "meta.json").is_file():
        return ActivationStore(folder)
    layers = sorted({int(layer) for layer in layers})
    bad = [layer for layer in layers if not 0 <= layer <= handle.n_layers]
    if bad:
        raise MedinterpError(f"sae.layer {bad} out of range for {handle.name}; valid: 0..{handle.n_layers}")
    keep = token_mask(mask)  # (n, T)
    n_total, d = int(keep.sum()), handle.d_model
    if n_total == 0:
        raise MedinterpError("sae: the packed contexts hold no tokens after position 0 (raise sae.ctx_len)")
    partial = folder.with_name(folder.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    sizes = [min(shard_tokens, n_total - s) for s in range(0, n_total, shard_tokens)]
    shards = {layer: [] for layer in layers}
    for layer in layers:
        (partial / f"layer_{layer}").mkdir()
        shards[layer] = [open_memmap(partial / f"layer_{layer}" / f"shard_{i:05d}.npy", mode="w+", dtype=np.float32,
                                     shape=(size, d)) for i, size in enumerate(sizes)]
    bounds = np.cumsum([0, *sizes])
    sq_norm = {layer: 0.0 for layer in layers}
    row = 0
    for start in tqdm(range(0, len(input_ids), batch_contexts), desc=desc, unit="batch", disable=not progress):
        stop = min(start + batch_contexts, len(input_ids))
        acts = capture_batch(handle, token_batch(input_ids[start:stop], mask[start:stop]), layers, None)
        sel = keep[start:stop].to(acts[0].device)
        n = int(sel.sum())
        for layer, hidden in zip(layers, acts):
            x = hidden[sel].float().cpu().numpy()  # (n, d), context-major
            sq_norm[layer] += float(np.square(x, dtype=np.float64).sum())
            _write_rows(shards[layer], bounds, row, x)
        row += n
    for layer in layers:
        for shard in shards[layer]:
            shard.flush()
    positions = keep.nonzero().numpy().astype(np.int32)  # (n_total, 2), row-major = context-major
    np.save(partial / "index.npy", positions)
    np.save(partial / "token_ids.npy", input_ids[keep].numpy().astype(np.int32))
    np.save(partial / "token_types.npy", np.full(n_total, TEXT, dtype=np.uint8))
    meta = {"format": FORMAT_VERSION, "model": handle.name, "layers": layers, "d": d, "n_tokens": n_total,
            "n_contexts": int(len(input_ids)), "ctx_len": int(input_ids.shape[1]), "shard_sizes": sizes,
            "mean_squared_norm": {str(layer): sq_norm[layer] / n_total for layer in layers},
            "token_types": {"text": TEXT, "image": IMAGE}}
    (partial / "meta.json").write_text(json.dumps(meta, indent=1))
    shutil.rmtree(folder, ignore_errors=True)
    partial.rename(folder)
    return ActivationStore(folder)


def _write_rows(shards: list[np.ndarray], bounds: np.ndarray, row: int, x: np.ndarray) -> None:
    """Write ``x`` at global rows row.. across the shard boundaries."""
    done = 0
    while done < len(x):
        s = int(np.searchsorted(bounds, row + done, side="right") - 1)
        local = row + done - bounds[s]
        take = min(len(x) - done, bounds[s + 1] - (row + done))
        shards[s][local:local + take] = x[done:done + take]
        done += take


__all__ = ["ActivationStore", "DEFAULT_SHARD_TOKENS", "IMAGE", "TEXT", "TokenStream", "cache_activations",
           "token_batch"]
