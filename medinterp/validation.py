"""Value checks in one place: what counts as an integer or a number, and the run-level settings.

:func:`is_int` and :func:`is_number` are the type tests every check uses (metrics/_validation.py, map
parameters, tracker settings), so none of them lets ``True`` pass as 1 or a numpy integer fail.

Hydra passes settings through as the user typed them (``seed=abc`` arrives as the string ``'abc'``); the
setting checks stop a run before any work with ``The 'seed' setting must be an integer in [0, 2**32);
got 'abc'.`` instead of a traceback deep inside a method.
"""
from __future__ import annotations

import numbers
from collections.abc import Iterable, Mapping
from typing import Any

from medinterp.errors import MedinterpError


def is_int(value: Any) -> bool:
    """An integer (Python or numpy), never a bool."""
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def is_number(value: Any) -> bool:
    """A real number (int or float, Python or numpy), never a bool."""
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def check_positive_int(name: str, value: Any, allow_none: bool = False) -> None:
    """``The 'batch_size' setting must be a positive integer; got 0.`` unless ``value`` is an int >= 1."""
    if allow_none and value is None:
        return
    if not is_int(value) or value < 1:
        extra = " or null" if allow_none else ""
        raise MedinterpError(f"The {name!r} setting must be a positive integer{extra}; got {value!r}.")


def check_int_settings(owner: str, settings: Any, lows: Mapping[str, int],
                       nullable: Mapping[str, str] | None = None) -> None:
    """Each attribute ``name`` of ``settings`` named in ``lows`` is an integer >= ``lows[name]``, or None where
    ``nullable`` says what null means; otherwise one line, e.g. ``gradcam method: n_boot must be an integer >= 1;
    got 0`` or ``saliency method: max_prompts must be an integer >= 1 or null (all); got 'x'``."""
    for name, low in lows.items():
        value, meaning = getattr(settings, name), (nullable or {}).get(name)
        if value is None and meaning is not None:
            continue
        if not is_int(value) or value < low:
            extra = f" or null ({meaning})" if meaning is not None else ""
            raise MedinterpError(f"{owner}: {name} must be an integer >= {low}{extra}; got {value!r}")


def check_seed(value: Any, name: str = "seed") -> None:
    """A seed is an integer in [0, 2**32) (what numpy, torch and UMAP all accept)."""
    if not is_int(value) or not 0 <= value < 2**32:
        raise MedinterpError(f"The {name!r} setting must be an integer in [0, 2**32); got {value!r}.")


def check_run_settings(*, batch_size: Any, seed: Any, batch_tokens: Any = None) -> None:
    """The run-level settings of ``runners/map.py`` (conf/map.yaml), checked before anything is loaded."""
    check_positive_int("batch_size", batch_size)
    check_positive_int("batch_tokens", batch_tokens, allow_none=True)
    check_seed(seed)


# settings that no longer exist -> what replaced them (issue 15: one meaning of the batch limits for every method)
RETIRED_SETTINGS = {
    "max_batch_tokens": "max_batch_tokens was renamed batch_tokens: padded tokens per forward pass, for every method "
                        "(conf/map.yaml)",
    "method.batch_size": "method.batch_size was replaced by the top-level batch_size: prompts per forward pass, for "
                         "every method (conf/map.yaml)",
    "method.max_batch_tokens": "method.max_batch_tokens was replaced by the top-level batch_tokens: padded tokens per "
                               "forward pass, for every method (conf/map.yaml)",
}


def check_retired_settings(keys: Iterable[str]) -> None:
    """One line for the first of ``keys`` (dotted, as typed: ``method.batch_size``) that names a retired setting,
    saying what replaced it, instead of Hydra's "not in struct" or a method's "unknown setting"."""
    for key in keys:
        if key in RETIRED_SETTINGS:
            raise MedinterpError(RETIRED_SETTINGS[key])


__all__ = ["RETIRED_SETTINGS", "check_positive_int", "check_retired_settings", "check_run_settings", "check_seed",
           "is_int", "is_number"]
