"""Checks of run-level settings, with one-line messages that name the setting and what it accepts.

Hydra passes settings through as the user typed them (``seed=abc`` arrives as the string ``'abc'``); these
checks stop a run before any work with ``The 'seed' setting must be an integer >= 0; got 'abc'.``
instead of a traceback deep inside a method.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from medinterp.errors import MedinterpError


def _is_int(value: Any) -> bool:
    return not isinstance(value, bool) and isinstance(value, (int, np.integer))


def check_positive_int(name: str, value: Any, allow_none: bool = False) -> None:
    """``The 'batch_size' setting must be a positive integer; got 0.`` unless ``value`` is an int >= 1."""
    if allow_none and value is None:
        return
    if not _is_int(value) or value < 1:
        extra = " or null" if allow_none else ""
        raise MedinterpError(f"The {name!r} setting must be a positive integer{extra}; got {value!r}.")


def check_seed(value: Any, name: str = "seed") -> None:
    """A seed is an integer in [0, 2**32) (what numpy, torch and UMAP all accept)."""
    if not _is_int(value) or not 0 <= value < 2**32:
        raise MedinterpError(f"The {name!r} setting must be an integer in [0, 2**32); got {value!r}.")


def check_run_settings(*, batch_size: Any, seed: Any, max_batch_tokens: Any = None) -> None:
    """The run-level settings of ``runners/map.py`` (conf/map.yaml), checked before anything is loaded."""
    check_positive_int("batch_size", batch_size)
    check_positive_int("max_batch_tokens", max_batch_tokens, allow_none=True)
    check_seed(seed)


__all__ = ["check_positive_int", "check_run_settings", "check_seed"]
