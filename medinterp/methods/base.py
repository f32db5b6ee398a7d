"""What every method returns, the two kinds of method, and the registry (keys = ``conf/method/<key>.yaml``).

Two kinds of method, told apart by the method they define:

- an *activation method* (``umap``) defines ``run(acts, points, labelings)``: the pipeline captures the
  residual stream (through the activation cache) and hands it over;
- a *model method* (``saliency``, ``ablation``, ``patching``) defines
  ``run_model(handle, prompt_set, templates, labelings)``: it needs the model itself.

The ``layer`` column (docs/results-format.md) is a read-out index shared by all methods: ``l`` is the
residual stream after ``l`` blocks (0 = embedding output). Quantities that belong to a module are
reported at the read-out that module writes: the embedding at 0, decoder block ``b`` (its weights, its
ablation, its attention/MLP outputs) at ``b + 1``. Residual-stream sites are reported at their read-out
(the input of block ``b`` is read-out ``b``). ``-1`` marks a layer-independent baseline.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from medinterp.metrics import Estimate
from medinterp.registry import Registry
from medinterp.results import ItemRow, Row

if TYPE_CHECKING:
    from medinterp.models import ModelHandle
    from medinterp.prompts import PromptSet


@dataclass(frozen=True)
class Measurement:
    """One metric of one labeling at one layer (``layer = -1``: a layer-independent baseline)."""

    labeling: str
    metric: str
    layer: int
    estimate: Estimate
    note: str = ""  # why the value is NaN or must be read with care (results column ``note``)


@dataclass(frozen=True)
class ItemValue:
    """One item's (or contrast pair's) value of a metric at a layer: what a per-layer mean averages.

    ``note`` is empty for a value that enters the mean, else why it does not (results column ``note``).
    """

    labeling: str
    metric: str
    layer: int
    item: str
    template: str
    value: float
    note: str = ""


@dataclass
class MethodResult:
    """A method's measurements plus anything it wants drawn (e.g. 2-D embeddings per layer).

    ``items`` are the per-item values behind the measurements (model methods; ``per_item.csv``). They are
    built in the method's ``finish`` on rank 0, so every distributed strategy writes them.
    """

    measurements: list[Measurement]
    artifacts: dict[str, Any] = field(default_factory=dict)
    items: list[ItemValue] = field(default_factory=list)

    def rows(self, model: str, domain: str, method: str) -> list[Row]:
        """The measurements as per-layer rows of the results table."""
        return [Row(model, domain, m.labeling, method, m.metric, m.layer, m.estimate.value, m.estimate.ci_low,
                    m.estimate.ci_high, m.estimate.n, m.note) for m in self.measurements]

    def item_rows(self, model: str, domain: str, method: str) -> list[ItemRow]:
        """The per-item values as rows of ``per_item.csv``."""
        return [ItemRow(model, domain, method, v.labeling, v.metric, v.layer, v.item, v.template, float(v.value), v.note)
                for v in self.items]


@runtime_checkable
class ModelMethod(Protocol):
    """A method that runs the model itself (see the module docstring)."""

    name: str

    def run_model(self, handle: ModelHandle, prompt_set: PromptSet, templates: Sequence[str],
                  labelings: Sequence[str] | None = None) -> MethodResult: ...


def run_units_here(method: Any, handle: ModelHandle, prompt_set: PromptSet, templates: Sequence[str],
                   labelings: Sequence[str] | None = None) -> MethodResult:
    """A split model method (``prepare`` / ``run_unit`` / ``finish``) in this process, one unit after another.

    The ``run_model`` of such methods; under medinterp.distributed the same three steps run data-parallel
    (``prepare`` on every rank, ``run_unit`` on each rank's share of the units, ``finish`` on rank 0).
    """
    from tqdm.auto import tqdm

    work = method.prepare(handle, prompt_set, templates, labelings)
    results = [method.run_unit(handle, work, i)
               for i in tqdm(range(work.n_units), desc=f"{method.name} {handle.name}/{prompt_set.domain}", unit="batch",
                             leave=False)]
    return method.finish(handle, work, results)


_METHODS = Registry("method")
register_method = _METHODS.register  # class decorator; the conf file is conf/method/<name>.yaml
method_class = _METHODS.get
