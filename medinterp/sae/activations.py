"""Residual-stream activations of packed contexts, streamed into a sharded on-disk cache (memmap), and read back
as SAE batches.

Two sources of rows, captured in this order and appended to float32 shards:

- packed text contexts, through the one text capture path (medinterp/capture/residual.py ``capture_batch``,
  read-out l = residual stream after l blocks, the forward stopped after the last requested layer); of each
  context the SAE tokens (packing.token_mask: non-pad, position 0 dropped), all of type text;
- image prompts of a vision-language model (each an image and its question, e.g. the ``synthetic_xray`` set),
  through the multimodal backbone (medinterp/capture/images.py ``capture_image_batch``: tower, projector, the
  merge, the language model; read-out 0 = input of block 0, l >= 1 = output of block l - 1); of each prompt
  the positions of medinterp's token types (``type_masks``: ``image`` = the image's grid tokens, ``text`` = its
  text tokens without special tokens), position 0 (the first real token, an attention sink) dropped.

``tokens`` (image | text | all, the map's ``method.tokens``) keeps only rows of that type; a source none of
whose rows can be kept is not run (``tokens=image``: the text contexts are not captured).

    <folder>/meta.json                 layers, d, n_tokens, shard sizes, per layer the mean squared norm,
                                       tokens, rows per type, n_contexts, n_image_prompts
    <folder>/layer_<l>/shard_<i>.npy   (rows, d) float32, ``shard_tokens`` rows each (the last: the rest)
    <folder>/index.npy                 (n_tokens, 2) int32: (context, position) of every row; image prompt i
                                       is context n_contexts + i
    <folder>/token_ids.npy             (n_tokens,) int32: the token at that position (image rows: the
                                       processor's image token id)
    <folder>/token_types.npy           (n_tokens,) uint8: 0 = text, 1 = image

The folder is written as ``<folder>.partial`` and renamed into place once complete (a killed capture never looks
complete; the next run starts it again). Memory is bounded by one batch of contexts (and of prompts).

Scaling (``ActivationStore.scale``): s = sqrt(d / E||x||^2) over the store's tokens, so that E||s x||^2 = d
(SAELens's ``normalize_activations: expected_average_only_in``, dictionary_learning's ``normalize_activations``):
SAE hyperparameters then transfer across layers and models. Reconstructions go back to raw space as x_hat / s
(CE-loss recovered splices raw activations into the model); FVU is unchanged by the scaling (a ratio).
"""
from __future__ import annotations

import json
import logging
import shutil
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import torch
from numpy.lib.format import open_memmap
from tqdm.auto import tqdm

from medinterp.capture.images import capture_image_batch, check_tokens, encode_images, require_vision, type_masks
from medinterp.capture.residual import capture_batch
from medinterp.capture.tokens import TokenBatch, position_ids
from medinterp.errors import MedinterpError
from medinterp.sae.packing import token_mask

FORMAT_VERSION = 2  # 2: per-row token types (token_types.npy, meta rows_per_type); bump when a store's layout changes
TEXT, IMAGE = 0, 1  # token types
DEFAULT_SHARD_TOKENS = 65_536
log = logging.getLogger(__name__)


def _stored_format(folder: Path) -> object:
    """The ``format`` of a complete store's meta.json (None when unreadable: captured again like an old format)."""
    try:
        return json.loads((folder / "meta.json").read_text()).get("format")
    except (OSError, ValueError, AttributeError):
        return None


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


class _ShardWriter:
    """Rows appended to ``shard_tokens``-row float32 memmaps per layer; the last shard is cut to its rows on close
    (the total need not be known in advance)."""

    def __init__(self, folder: Path, layers: Sequence[int], d: int, shard_tokens: int):
        self.folder, self.layers, self.d, self.shard_tokens = folder, list(layers), d, shard_tokens
        self.sizes: list[int] = []  # rows written into each shard
        self.shards: dict[int, np.ndarray] = {}  # the open (last) shard per layer
        self.sq_norm = {layer: 0.0 for layer in self.layers}
        for layer in self.layers:
            (folder / f"layer_{layer}").mkdir()

    def _path(self, layer: int, i: int) -> Path:
        return self.folder / f"layer_{layer}" / f"shard_{i:05d}.npy"

    def append(self, rows: Sequence[np.ndarray]) -> None:
        """``rows[i]`` (n, d) float32 of ``layers[i]``."""
        for layer, x in zip(self.layers, rows):
            self.sq_norm[layer] += float(np.square(x, dtype=np.float64).sum())
        done, n = 0, len(rows[0])
        while done < n:
            if not self.sizes or self.sizes[-1] == self.shard_tokens:
                self._flush()
                self.sizes.append(0)
                self.shards = {layer: open_memmap(self._path(layer, len(self.sizes) - 1), mode="w+",
                                                  dtype=np.float32, shape=(self.shard_tokens, self.d))
                               for layer in self.layers}
            at = self.sizes[-1]
            take = min(n - done, self.shard_tokens - at)
            for layer, x in zip(self.layers, rows):
                self.shards[layer][at:at + take] = x[done:done + take]
            self.sizes[-1] += take
            done += take

    def _flush(self) -> None:
        for shard in self.shards.values():
            shard.flush()

    def close(self) -> list[int]:
        """Flush, cut the last shard to its rows; the shard sizes."""
        self._flush()
        if self.sizes and self.sizes[-1] < self.shard_tokens:
            i, n = len(self.sizes) - 1, self.sizes[-1]
            for layer in self.layers:
                rows = np.array(self.shards[layer][:n])
                del self.shards[layer]
                np.save(self._path(layer, i), rows)
        self.shards = {}
        return self.sizes


def _text_rows(handle, input_ids: torch.Tensor, mask: torch.Tensor, layers: list[int], batch_contexts: int,
               progress: bool, desc: str) -> Iterator[tuple[list[np.ndarray], np.ndarray, np.ndarray, np.ndarray]]:
    """Per batch of packed contexts: the SAE tokens' rows per layer (n, d), (context, position) (n, 2), token ids
    and types (n,)."""
    keep = token_mask(mask)  # (n, T)
    for start in tqdm(range(0, len(input_ids), batch_contexts), desc=desc, unit="batch", disable=not progress):
        stop = min(start + batch_contexts, len(input_ids))
        acts = capture_batch(handle, token_batch(input_ids[start:stop], mask[start:stop]), layers, None)
        sel = keep[start:stop]
        where = sel.nonzero()  # (n, 2) row-major = context-major
        where[:, 0] += start
        yield ([hidden[sel.to(hidden.device)].float().cpu().numpy() for hidden in acts], where.numpy(),
               input_ids[start:stop][sel].numpy(), np.full(len(where), TEXT, dtype=np.uint8))


def image_sae_mask(batch, special_ids: Sequence[int], tokens: str) -> torch.Tensor:
    """(B, T) bool: the SAE tokens of a processor batch of image prompts: the positions of ``tokens``
    (medinterp.capture.images.type_masks), each prompt's first real token (position 0 of its text) dropped."""
    attention = batch.inputs["attention_mask"]
    sel = type_masks(batch.inputs["input_ids"], batch.token_types, special_ids)[tokens].clone()
    sel[torch.arange(len(sel)), attention.argmax(-1)] = False  # the first real token, whatever the padding side
    return sel


def _image_rows(handle, prompts: Sequence, first_context: int, layers: list[int], tokens: str, batch_prompts: int,
                progress: bool, desc: str) -> Iterator[tuple[list[np.ndarray], np.ndarray, np.ndarray, np.ndarray]]:
    """Per batch of image prompts: as :func:`_text_rows`; prompt i is context ``first_context + i``."""
    special = handle.tokenizer.all_special_ids
    for start in tqdm(range(0, len(prompts), batch_prompts), desc=f"{desc}, images", unit="batch",
                      disable=not progress):
        batch = encode_images(handle, prompts[start:start + batch_prompts])
        sel = image_sae_mask(batch, special, tokens)  # (B, T)
        acts = capture_image_batch(handle, batch, layers, None)  # (B, T, d) each
        where = sel.nonzero()
        types = batch.token_types[sel].numpy().astype(np.uint8)
        where[:, 0] += first_context + start
        yield ([hidden[sel.to(hidden.device)].float().cpu().numpy() for hidden in acts], where.numpy(),
               batch.inputs["input_ids"][sel].numpy(), types)


def cache_activations(handle, input_ids: torch.Tensor, mask: torch.Tensor, layers: Sequence[int], folder: str | Path,
                      batch_contexts: int = 8, shard_tokens: int = DEFAULT_SHARD_TOKENS,
                      progress: bool = True, desc: str = "SAE activations", images: Sequence = (),
                      tokens: str = "all") -> ActivationStore:
    """Capture the SAE tokens of ``input_ids`` / ``mask`` (n, T) and of the image prompts ``images`` (each with
    ``.text`` and ``.image``; a vision-language model) at ``layers`` into ``folder`` (reused when it is already
    complete), keeping the token types ``tokens`` (image | text | all), and return the store."""
    folder = Path(folder)
    if (folder / "meta.json").is_file():
        found = _stored_format(folder)
        if found == FORMAT_VERSION:
            return ActivationStore(folder)
        log.warning("SAE activation cache %s has format %s, this code writes %s: capturing it again", folder, found,
                    FORMAT_VERSION)
    check_tokens(tokens)
    layers = sorted({int(layer) for layer in layers})
    bad = [layer for layer in layers if not 0 <= layer <= handle.n_layers]
    if bad:
        raise MedinterpError(f"sae.layer {bad} out of range for {handle.name}; valid: 0..{handle.n_layers}")
    if images:
        require_vision(handle, "sae.images")
    elif tokens == "image":
        raise MedinterpError("sae.tokens=image needs image prompts: sae.images=[<an image prompt set>] on a "
                             "vision-language model (e.g. model=tiny_llava sae.images=[synthetic_xray])")
    partial = folder.with_name(folder.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    writer = _ShardWriter(partial, layers, handle.d_model, shard_tokens)
    sources = [] if tokens == "image" else [_text_rows(handle, input_ids, mask, layers, batch_contexts, progress, desc)]
    if images:
        sources.append(_image_rows(handle, list(images), len(input_ids), layers, tokens, batch_contexts, progress,
                                   desc))
    index, ids, types = [], [], []
    for source in sources:
        for rows, where, token_ids, token_types in source:
            if len(where):
                writer.append(rows)
                index.append(where.astype(np.int32))
                ids.append(token_ids.astype(np.int32))
                types.append(token_types)
    sizes = writer.close()
    n_total = sum(sizes)
    if n_total == 0:
        shutil.rmtree(partial, ignore_errors=True)
        raise MedinterpError(f"sae: no {tokens} tokens to cache (the packed contexts hold no tokens after position 0 "
                             f"and no image prompt has any; raise sae.ctx_len or add prompts)")
    types = np.concatenate(types)
    np.save(partial / "index.npy", np.concatenate(index))
    np.save(partial / "token_ids.npy", np.concatenate(ids))
    np.save(partial / "token_types.npy", types)
    meta = {"format": FORMAT_VERSION, "model": handle.name, "layers": layers, "d": handle.d_model,
            "n_tokens": n_total, "n_contexts": int(len(input_ids)), "ctx_len": int(input_ids.shape[1]),
            "n_image_prompts": len(images), "tokens": tokens, "shard_sizes": sizes,
            "mean_squared_norm": {str(layer): writer.sq_norm[layer] / n_total for layer in layers},
            "token_types": {"text": TEXT, "image": IMAGE},
            "rows_per_type": {"text": int((types == TEXT).sum()), "image": int((types == IMAGE).sum())}}
    (partial / "meta.json").write_text(json.dumps(meta, indent=1))
    shutil.rmtree(folder, ignore_errors=True)
    partial.rename(folder)
    return ActivationStore(folder)


__all__ = ["ActivationStore", "DEFAULT_SHARD_TOKENS", "IMAGE", "TEXT", "TokenStream", "cache_activations",
           "image_sae_mask", "token_batch"]
