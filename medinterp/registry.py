"""A name → class registry; each registry's names equal the files of one conf group (conf/<group>/<name>.yaml)."""
from __future__ import annotations

from collections.abc import Callable

from medinterp.errors import unknown_choice


class Registry:
    """Classes registered by name with a decorator; duplicates refused, unknown names listed."""

    def __init__(self, kind: str):
        self.kind = kind  # "method", "judge": used in error messages
        self._classes: dict[str, type] = {}

    def register(self, name: str) -> Callable[[type], type]:
        """Class decorator: register under ``name`` and set ``cls.name``."""
        def deco(cls: type) -> type:
            if name in self._classes:
                raise ValueError(f"{self.kind} {name!r} registered twice")
            self._classes[name] = cls
            cls.name = name
            return cls
        return deco

    def get(self, name: str) -> type:
        """The class registered as ``name``; an unknown name is a one-line error listing the valid ones."""
        if name not in self._classes:
            raise unknown_choice(self.kind, name, self._classes)
        return self._classes[name]

    def names(self) -> list[str]:
        return sorted(self._classes)
