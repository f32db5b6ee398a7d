"""Tracker settings (conf/logger/*.yaml as a validated dataclass) and how the W&B mode is chosen.

``mode: null`` (auto) resolves, in order, to

1. ``$WANDB_MODE`` when set (``online``, ``offline``, ``disabled``; W&B's aliases ``run`` = online and
   ``dryrun`` = offline are accepted);
2. ``online`` when ``$WANDB_API_KEY`` is set;
3. ``offline`` otherwise: the run is written next to the results and can be uploaded later with
   ``wandb sync``.
"""
from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any

from medinterp.errors import MedinterpError, unknown_choice
from medinterp.validation import is_number

BACKENDS = ("wandb", "none")
MODES = ("online", "offline", "disabled")
_MODE_ALIASES = {"run": "online", "dryrun": "offline"}  # values W&B itself accepts in $WANDB_MODE


@dataclass(frozen=True)
class TrackerSettings:
    """Where and how runs are tracked. ``name: none`` (conf/logger/none.yaml) turns tracking off."""

    name: str = "wandb"            # backend: wandb | none
    mode: str | None = None        # None = auto (see resolve_mode) | online | offline | disabled
    project: str = "medinterp"
    entity: str | None = None      # a W&B team or user; None = the key's default entity
    dir: str | None = None         # parent of the wandb/ folder; None = the results folder itself
    group: str | None = None       # overrides the runner's group (the sweep folder's name in a multirun)
    tags: tuple[str, ...] = ()     # added to every run
    init_timeout: float = 30.0     # seconds wandb.init may take online before we fall back to offline
    offline_fallback: bool = True  # online init failed (no network, bad key): log offline instead
    images: bool = True            # log every PNG as a wandb.Image
    artifacts: bool = True         # log the prompt-set and results artifacts

    def __post_init__(self) -> None:
        if self.name not in BACKENDS:
            raise unknown_choice("logger", self.name, BACKENDS)
        if self.mode is not None and self.mode not in MODES:
            raise unknown_choice("logger mode", self.mode, [*MODES, "null"])
        if not isinstance(self.project, str) or not self.project:
            raise MedinterpError(f"logger.project must be a non-empty string; got {self.project!r}")
        if isinstance(self.tags, str) or not all(isinstance(t, str) for t in self.tags):
            raise MedinterpError(f"logger.tags must be a list of strings; got {self.tags!r}")
        object.__setattr__(self, "tags", tuple(self.tags))
        if not (is_number(self.init_timeout) and self.init_timeout > 0):
            raise MedinterpError(f"logger.init_timeout must be a positive number of seconds; got {self.init_timeout!r}")

    @classmethod
    def from_dict(cls, cfg: Mapping[str, Any] | None) -> TrackerSettings:
        """Build from a plain mapping (a resolved ``cfg.logger``); None means tracking off."""
        if cfg is None:
            return cls(name="none")
        valid = {f.name for f in fields(cls)}
        for key in cfg:
            if key not in valid:
                raise unknown_choice("logger setting", key, valid)
        values = dict(cfg)
        if values.get("tags") is None:
            values.pop("tags", None)
        return cls(**values)

    @property
    def enabled(self) -> bool:
        return self.name != "none" and self.mode != "disabled"


def resolve_mode(mode: str | None, environ: Mapping[str, str] | None = None) -> str:
    """The W&B mode to use: ``mode`` itself, or for ``None`` the rule in the module docstring."""
    env = os.environ if environ is None else environ
    if mode is not None:
        if mode not in MODES:
            raise unknown_choice("logger mode", mode, [*MODES, "null"])
        return mode
    from_env = env.get("WANDB_MODE", "").strip().lower()
    if from_env:
        from_env = _MODE_ALIASES.get(from_env, from_env)
        if from_env not in MODES:
            raise unknown_choice("WANDB_MODE", from_env, MODES)
        return from_env
    return "online" if env.get("WANDB_API_KEY") else "offline"
