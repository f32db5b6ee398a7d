"""What every method returns, and the method registry (keys = ``conf/method/<key>.yaml``)."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from medinterp.errors import unknown_choice
from medinterp.metrics import Estimate
from medinterp.results import Row


@dataclass(frozen=True)
class Measurement:
    """One metric of one labeling at one layer (``layer = -1``: a layer-independent baseline)."""

    labeling: str
    metric: str
    layer: int
    estimate: Estimate


@dataclass
class MethodResult:
    """A method's measurements plus anything it wants drawn (e.g. 2-D embeddings per layer)."""

    measurements: list[Measurement]
    artifacts: dict[str, Any] = field(default_factory=dict)

    def rows(self, model: str, domain: str, method: str) -> list[Row]:
        """The measurements as per-layer rows of the results table."""
        return [Row(model, domain, m.labeling, method, m.metric, m.layer, m.estimate.value, m.estimate.ci_low,
                    m.estimate.ci_high, m.estimate.n) for m in self.measurements]


_METHODS: dict[str, type] = {}


def register_method(name: str):
    """Class decorator: register a method under ``name`` (its conf file is ``conf/method/<name>.yaml``)."""
    def deco(cls: type) -> type:
        if name in _METHODS:
            raise ValueError(f"method {name!r} registered twice")
        _METHODS[name] = cls
        cls.name = name
        return cls
    return deco


def method_class(name: str) -> type:
    """The registered method class for ``name``; unknown names list the valid ones."""
    if name not in _METHODS:
        raise unknown_choice("method", name, _METHODS)
    return _METHODS[name]


def registered_methods() -> list[str]:
    return sorted(_METHODS)
