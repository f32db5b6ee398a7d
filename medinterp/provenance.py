"""Versions of the packages a result depends on (summary.json, W&B config)."""
from __future__ import annotations

import importlib.metadata
import platform

PACKAGES = ("medinterp", "torch", "transformers", "umap-learn", "scikit-learn", "numpy", "hydra-core", "deepspeed",
            "lightning")


def versions() -> dict[str, str]:
    """``{"python": ..., <package>: <version> | "not installed"}``."""
    out = {"python": platform.python_version()}
    for dist in PACKAGES:
        try:
            out[dist] = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            out[dist] = "not installed"
    return out
