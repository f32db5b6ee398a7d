"""User-facing errors.

Every mistake a user can make (an unknown name, a missing file, an invalid prompt set, a batch that does
not fit in memory) raises :class:`MedinterpError` with a one-line message that names the bad thing and,
where there is a finite set, the valid choices. Runners print that line and exit with status 2, without a
traceback. Internal invariants use ``assert``.
"""
from __future__ import annotations

from collections.abc import Iterable


class MedinterpError(Exception):
    """An error caused by the user's input; ``str(err)`` is one line meant to be printed as is."""


def unknown_choice(kind: str, name: object, valid: Iterable[str]) -> MedinterpError:
    """Build the standard "unknown X" error: ``unknown model 'foo'; valid: a, b, c``."""
    choices = ", ".join(sorted(valid)) or "(none)"
    return MedinterpError(f"unknown {kind} {name!r}; valid: {choices}")
