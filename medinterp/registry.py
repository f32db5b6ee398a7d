"""A name → class registry (each registry's names equal the files of one conf group, conf/<group>/<name>.yaml), and
:func:`build`: an object from a plain ``_target_`` config."""
from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from typing import Any

from medinterp.errors import MedinterpError, unknown_choice


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


def build(spec: Any) -> Any:
    """The object a plain config describes: a mapping with ``_target_`` (a dotted class path) is that class built from
    its other keys, themselves built first (so a method's ``judge:`` node becomes a judge); lists are built item by
    item; anything else is returned as it is. An unknown setting is a one-line error naming the valid ones."""
    if isinstance(spec, (list, tuple)):
        return [build(v) for v in spec]
    if not isinstance(spec, Mapping) or "_target_" not in spec:
        return spec
    module, _, name = str(spec["_target_"]).rpartition(".")
    try:
        cls = getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError, ValueError):
        raise MedinterpError(f"_target_ {spec['_target_']!r} names no importable class") from None
    kwargs = {k: build(v) for k, v in spec.items() if k != "_target_"}
    fields = getattr(cls, "__dataclass_fields__", None)
    if fields is not None:
        valid = {k for k, f in fields.items() if f.init}
        unknown = sorted(set(kwargs) - valid)
        if unknown:
            label = getattr(cls, "name", None) or name
            raise MedinterpError(f"{label}: unknown setting(s) {unknown}; valid: {', '.join(sorted(valid))}")
    return cls(**kwargs)
