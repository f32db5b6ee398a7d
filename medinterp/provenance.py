"""Where a result came from: package versions, a run id, and a hash of the settings that decide its numbers.

- :func:`versions` — the installed versions of the packages a result depends on (summary.json);
- :func:`run_id` — a short stable id of one run folder: the sha256 of its folder name and the writer's
  start time (both recorded in summary.json, so the id can be recomputed), first 12 hex digits;
- :func:`config_hash` — sha256 of the canonical JSON (sorted keys, no spaces) of a resolved config minus
  :data:`NUMBER_FREE_KEYS`, the top-level keys that decide where and how a run is written or shown but not
  its numbers. Two runs with equal hashes ran the same settings; a changed seed, model, method setting or
  batch size changes the hash, a different output folder, logger, device or cache does not.
"""
from __future__ import annotations

import hashlib
import importlib.metadata
import json
import platform
from collections.abc import Mapping, Sequence
from typing import Any

# Top-level config keys left out of config_hash: output and cache locations, tracking, figures, reports,
# the device, Hydra's own node. (batch_size, batch_tokens and strategy stay in: they can move float sums.)
NUMBER_FREE_KEYS = ("hydra", "out_dir", "cache_dir", "use_activation_cache", "resume", "logger", "plots", "report",
                    "device")
RUN_PACKAGES = ("medinterp", "torch", "transformers", "umap-learn", "scikit-learn", "numpy", "hydra-core",
                "deepspeed", "lightning")       # what a method run's numbers depend on
SUMMARY_PACKAGES = ("medinterp", "numpy", "scipy", "matplotlib", "hydra-core", "wandb")  # a sweep summary's


def versions(packages: Sequence[str] = RUN_PACKAGES) -> dict[str, str]:
    """``{"python": ..., <package>: <version> or "not installed"}`` for ``packages``."""
    out = {"python": platform.python_version()}
    for dist in packages:
        try:
            out[dist] = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            out[dist] = "not installed"
    return out


def _sha256(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def run_id(folder_name: str, started_at: str) -> str:
    """12 hex digits of sha256(``"<folder_name>@<started_at>"``): one id per run folder and start."""
    return _sha256(f"{folder_name}@{started_at}")[:12]


def config_hash(config: Mapping[str, Any]) -> str:
    """sha256 (hex) of the canonical JSON of ``config`` without :data:`NUMBER_FREE_KEYS`."""
    kept = {k: v for k, v in config.items() if k not in NUMBER_FREE_KEYS}
    return _sha256(json.dumps(kept, sort_keys=True, separators=(",", ":"), default=str))
