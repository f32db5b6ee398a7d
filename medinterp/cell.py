"""A cell of the map: one method on one model and one prompt set, with everything that decides its numbers.

A :class:`Cell` holds built objects (a loaded model, a prompt set, a method) and the cell's settings. It owns
its resume key (what decides the numbers, nothing about where or how it runs) and the summary written beside
its results. :func:`medinterp.run.run_cell` runs it.
"""
from __future__ import annotations

import dataclasses
import functools
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from medinterp.capture.limits import DEFAULT_BATCH_TOKENS
from medinterp.resume import resume_key
from medinterp.distributed.strategy import Strategy, StrategyConfig
from medinterp.methods import Points, stack_points
from medinterp.models import ModelHandle
from medinterp.prompts import PromptSet
from medinterp.validation import check_run_settings


def _single() -> Strategy:
    return Strategy(StrategyConfig())


@dataclass(frozen=True)
class Cell:
    """One (model, prompt set, method) cell and its settings.

    ``templates``: the prompt templates measured; ``labelings``: the labelings measured (None: all);
    ``reduction``: the token read-out of captured activations (medinterp/capture/tokens.py); ``batch_size`` and
    ``batch_tokens``: at most this many prompts and padded tokens per forward pass, for every method (each cuts its
    batches by them; medinterp/capture/limits.py);
    ``cache_dir``: the activation cache (None: off); ``settings``: the method's settings as configured (part of the
    resume key and the summary); ``strategy``: how many processes run it (a single process is a world of one).
    """

    handle: ModelHandle
    prompt_set: PromptSet
    method: Any  # a medinterp.methods.Method
    templates: tuple[str, ...]
    labelings: tuple[str, ...] | None = None
    reduction: str = "last"
    batch_size: int = 32
    batch_tokens: int | None = DEFAULT_BATCH_TOKENS
    seed: int = 0
    cache_dir: Path | None = None
    settings: dict[str, Any] = field(default_factory=dict)
    strategy: Strategy = field(default_factory=_single)

    def __post_init__(self) -> None:
        check_run_settings(batch_size=self.batch_size, seed=self.seed, batch_tokens=self.batch_tokens)
        object.__setattr__(self, "templates", tuple(self.templates))
        if self.labelings is not None:
            object.__setattr__(self, "labelings", tuple(self.labelings))
        self.prompt_set.require_modality(f"method={self.method.name}", getattr(self.method, "modalities", ("text",)))
        if getattr(self.method, "needs_items", True):  # every method but patching reads labelled items
            self.prompt_set.require_items(f"method={self.method.name}")

    @property
    def name(self) -> str:
        return f"{self.handle.name}/{self.prompt_set.domain}/{self.method.name}"

    @functools.cached_property
    def points(self) -> Points:
        """Every (item, template) point of the cell, template-major, with its labels (built once)."""
        return stack_points(self.prompt_set, self.templates)

    def key(self) -> str:
        """The resume key: a hash of what decides the cell's numbers (not the strategy, device, folders or plots)."""
        parts = {"model": dataclasses.asdict(self.handle.spec), "prompt_set": self.prompt_set.key,
                 "sha256": self.prompt_set.sha256, "method": self.method.name, "settings": self.settings,
                 "templates": list(self.templates), "labelings": None if self.labelings is None else list(self.labelings),
                 "reduction": self.reduction, "batch_size": self.batch_size, "seed": self.seed,
                 "batch_tokens": self.batch_tokens}
        return resume_key(parts)

    def summary(self, n_units: int, resumed: int) -> dict[str, Any]:
        """What summary.json says about the cell (the driver adds timings and the method's own summary)."""
        from medinterp.capture.cache import model_key
        from medinterp.provenance import versions

        h, ps, points = self.handle, self.prompt_set, self.points
        return {
            "model": {"name": h.name, "source": h.source, "key": model_key(h), "family": h.parts.adapter.family,
                      "n_layers": h.n_layers, "d_model": h.d_model, "device": str(h.device), "placement": h.placement},
            "strategy": {"name": self.strategy.name, "world_size": self.strategy.world_size, "resumed_batches": resumed,
                         "batches": n_units},
            "domain": ps.domain, "prompt_set": {"key": ps.key, "version": ps.version, "sha256": ps.sha256,
                                                "source": ps.source},
            "method": self.method.name, "templates": list(self.templates), "reduction": self.reduction,
            "n_points": len(points), "label_counts": label_counts(points, self.labelings), "versions": versions(),
        }


def label_counts(points: Points, labelings: tuple[str, ...] | None) -> dict[str, dict[str, int]]:
    """Points per class of each categorical/ordinal labeling (reviewers asked for data statistics)."""
    out = {}
    for name in labelings or points.labels:
        if points.kinds[name] != "numeric":
            values, counts = np.unique(points.labels[name].astype(str), return_counts=True)
            out[name] = dict(zip(values.tolist(), counts.tolist()))
    return out
