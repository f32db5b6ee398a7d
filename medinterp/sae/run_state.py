"""What the stages of an SAE run share (runners/sae.py): the handle, the layer, the activation stores, the SAE and
the tables; auto-interpretation and steering build their inputs from it (medinterp/sae/stages.py; docs/sae.md,
"Stages")."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from medinterp.sae.activations import ActivationStore
from medinterp.sae.model import SparseAutoencoder
from medinterp.sae.packing import Packed


@dataclass
class SAERun:
    """cfg: conf/sae.yaml resolved (plain containers); out_dir: the run folder; handle: the loaded language model;
    layer: the read-out layer; train / eval: the activation stores (eval: held-out contexts, rows in context order,
    ``eval.array("index")`` their (context, position)); eval_contexts: those held-out contexts' token ids and mask;
    scale: the factor applied to raw activations before the SAE (x_hat / scale is raw again); norm_limit: the
    raw norm above which a token is an outlier (outliers.py; the stores are the kept rows); sae: the trained or
    loaded SAE; metrics: metrics.json; latents: latents.csv rows; catalogue: catalogue.csv rows; prompts: per catalogued domain (prompt texts,
    {labeling: label per prompt}) for steering."""

    cfg: dict
    out_dir: Path
    handle: Any = None
    layer: int = -1
    train: ActivationStore | None = None
    eval: ActivationStore | None = None
    eval_contexts: Packed | None = None
    scale: float = 1.0
    norm_limit: float = float("inf")
    sae: SparseAutoencoder | None = None
    metrics: dict = field(default_factory=dict)
    latents: list[dict] = field(default_factory=list)
    catalogue: list[dict] = field(default_factory=list)
    prompts: dict[str, tuple[list[str], dict]] = field(default_factory=dict)


__all__ = ["SAERun"]
