"""Save and load SAEs in the two common layouts, found by what a folder holds.

- ``dictionary_learning``: ``ae.pt`` + ``config.json`` (format_dictionary_learning.py);
- ``saelens``: ``cfg.json`` + ``sae_weights.safetensors`` (format_saelens.py), which is how released SAEs
  (Gemma Scope, through SAELens) reach a user's disk.

``load_sae(path, d=...)`` takes the folder or a file in it (any ``*.pt`` file is read as dictionary_learning's
state dict, e.g. an older ``ae_final.pt``); a path in neither layout, or an SAE whose input width is not the
model's ``d``, stops with one line. ``save_sae`` writes each file under a temporary name and renames it, the
weights before the config, so an interrupted save never leaves a folder that looks complete.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file

from medinterp.errors import MedinterpError, unknown_choice
from medinterp.sae import format_dictionary_learning as dl
from medinterp.sae import format_saelens as sl
from medinterp.sae.model import SparseAutoencoder
from medinterp.sae.train_config import TrainConfig

LAYOUTS = ("dictionary_learning", "saelens")


def detect_layout(path: str | Path) -> tuple[str, Path]:
    """(layout, the file or folder to read) of ``path``; one line when it is in neither layout."""
    p = Path(path).expanduser()
    if not p.exists():
        raise MedinterpError(f"No SAE at {p}: the path does not exist.")
    if p.is_file() and p.suffix == ".pt":
        return "dictionary_learning", p
    folder = p if p.is_dir() else p.parent
    if (folder / sl.CONFIG).is_file() and (folder / sl.WEIGHTS).is_file():
        return "saelens", folder
    if (folder / dl.WEIGHTS).is_file():
        return "dictionary_learning", folder / dl.WEIGHTS
    raise MedinterpError(f"{p} holds an SAE in neither format: expected {dl.WEIGHTS} (+ {dl.CONFIG}, "
                         f"dictionary_learning) or {sl.CONFIG} + {sl.WEIGHTS} (SAELens).")


def load_sae(path: str | Path, d: int | None = None) -> tuple[SparseAutoencoder, str, dict]:
    """(the SAE, its layout, its config document) from ``path``; ``d``: the model's activation width to check."""
    layout, target = detect_layout(path)
    sae, doc = (dl.load if layout == "dictionary_learning" else sl.load)(target)
    if d is not None and sae.config.d != d:
        raise MedinterpError(f"The SAE at {path} reads activations of width {sae.config.d}, but the model's "
                             f"residual stream has width {d}.")
    return sae, layout, doc


def _write_atomic(path: Path, write) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    write(tmp)
    os.replace(tmp, path)


def save_sae(sae: SparseAutoencoder, folder: str | Path, layout: str = "saelens", *,
             train: TrainConfig | None = None, meta: dict[str, Any] | None = None) -> Path:
    """Write ``sae`` into ``folder`` (created) in ``layout``; ``meta`` (model name, layer, hook, ...) goes into
    the config (dictionary_learning: the trainer section; SAELens: ``metadata``). Returns the folder."""
    if layout not in LAYOUTS:
        raise unknown_choice("SAE layout", layout, LAYOUTS)
    out = Path(folder)
    out.mkdir(parents=True, exist_ok=True)
    meta = dict(meta or {})
    if layout == "dictionary_learning":
        cls, state = dl.state_dict(sae)
        doc, weights = dl.config_json(sae, cls, train, meta), out / dl.WEIGHTS
        _write_atomic(weights, lambda p: torch.save(state, p))
        config = out / dl.CONFIG
    else:
        doc, weights = sl.cfg_json(sae, meta, train), out / sl.WEIGHTS
        payload = sl.tensors(sae)
        _write_atomic(weights, lambda p: save_file(payload, str(p)))
        config = out / sl.CONFIG
    _write_atomic(config, lambda p: p.write_text(json.dumps(doc, indent=2)))
    return out


__all__ = ["LAYOUTS", "detect_layout", "load_sae", "save_sae"]
