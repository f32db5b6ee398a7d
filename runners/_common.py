"""Shared runner plumbing: one-line user errors, early validation of config-group choices, logging."""
from __future__ import annotations

import functools
import logging
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run from a clean clone without installing

from medinterp.errors import MedinterpError, unknown_choice  # noqa: E402

CONF = ROOT / "conf"
log = logging.getLogger("medinterp")


def check_group_choices(argv: list[str], groups: tuple[str, ...]) -> None:
    """Reject ``group=value`` overrides naming no ``conf/<group>/<value>.yaml``, before Hydra starts.

    Handles multirun lists (``domain=age,drugs``); sweep functions (``choice(...)``) are left to Hydra.
    """
    for arg in argv:
        key, sep, value = arg.partition("=")
        key = key.lstrip("+~")
        if not sep or key not in groups or "(" in value:
            continue
        valid = sorted(p.stem for p in (CONF / key).glob("*.yaml"))
        for choice in filter(None, value.split(",")):
            if choice not in valid:
                raise unknown_choice(key, choice, valid)


def user_errors(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Print a :class:`MedinterpError` as one line (``error: ...``) and exit 2, without a traceback."""
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except MedinterpError as err:
            print(f"error: {err}", file=sys.stderr)
            sys.exit(2)
    return wrapper


def exit_cleanly_on_sigterm() -> None:
    """Turn SIGTERM (``kill``, a scheduler's time limit) into SystemExit, so ``finally`` blocks run and
    atomic writers remove their temporary files instead of leaving them behind."""
    import signal

    signal.signal(signal.SIGTERM, lambda signum, _frame: sys.exit(128 + signum))


def quiet_libraries() -> None:
    """Keep third-party chatter out of the run log (transformers' per-tensor progress bars stay)."""
    import warnings

    warnings.filterwarnings("ignore", message=".*n_jobs value.*overridden.*")
    for name in ("numba", "urllib3", "filelock", "httpx"):
        logging.getLogger(name).setLevel(logging.WARNING)
