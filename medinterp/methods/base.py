"""The one seam every method plugs into, what every method returns, and the registry (keys = ``conf/method/<key>.yaml``).

A method is a :class:`Method`: the driver (:func:`medinterp.run.run_cell`) calls

- ``prepare(cell) -> work`` on every rank: the method's state for one :class:`~medinterp.cell.Cell`, with
  ``work.n_units`` model units (prompt batches; the same cut on every rank) and optionally
  ``work.n_local_units`` local units (rank 0, after every model unit; e.g. UMAP's per-layer statistics);
- ``run_unit(handle, work, i)`` for model unit ``i`` on whichever rank owns it (a forward/backward pass);
- ``local_unit(handle, work, j)`` on rank 0: a picklable zero-argument callable computing local unit ``j``
  (run in a worker process; medinterp/workers.py);
- ``open(handle, work)``, ``sink(handle, work, i, result)`` and ``close(handle, work, ok)`` on rank 0 around and
  for every finished model unit (defaults: nothing, keep the result, nothing). The driver checkpoints each
  unit's result for a restart, unless ``sink`` returns :data:`PERSISTED`: the method stored the unit itself
  (activation capture writes its batches into the cache's partial entry) and names the units it already holds
  from an earlier run in ``persisted(handle, work)`` (rank 0, after ``open``), so each is stored once;
- ``finish(handle, work, results)`` on rank 0 with every unit's result in unit order (model units, then local
  units): the :class:`MethodResult`. A method whose ``finish`` runs the model (``finish_runs_model = True``;
  neurons' interventions follow the ranking over all prompts) gets it called on every rank when the weights are
  partitioned (ZeRO-3: every forward is a collective), with rank 0's results broadcast; only rank 0's result is
  kept. Such a method has no local units.

The ``layer`` column (docs/results-format.md) is a read-out index shared by all methods: ``l`` is the
residual stream after ``l`` blocks (0 = embedding output). Quantities that belong to a module are
reported at the read-out that module writes: the embedding at 0, decoder block ``b`` (its weights, its
ablation, its attention/MLP outputs) at ``b + 1``. Residual-stream sites are reported at their read-out
(the input of block ``b`` is read-out ``b``). ``-1`` marks a layer-independent baseline.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from medinterp.metrics import Estimate
from medinterp.registry import Registry
from medinterp.results import ItemRow, Row

if TYPE_CHECKING:
    from medinterp.cell import Cell
    from medinterp.models import ModelHandle


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
    tokens: str = ""  # image prompt sets: the token type measured (medinterp/methods/tokens.py); "" for text sets

    def rows(self, model: str, domain: str, method: str) -> list[Row]:
        """The measurements as per-layer rows of the results table."""
        return [Row(model, domain, m.labeling, method, m.metric, m.layer, m.estimate.value, m.estimate.ci_low,
                    m.estimate.ci_high, m.estimate.n, m.note, tokens=self.tokens) for m in self.measurements]

    def item_rows(self, model: str, domain: str, method: str) -> list[ItemRow]:
        """The per-item values as rows of ``per_item.csv``."""
        return [ItemRow(model, domain, method, v.labeling, v.metric, v.layer, v.item, v.template, float(v.value), v.note)
                for v in self.items]


class _Persisted:
    def __repr__(self) -> str:
        return "PERSISTED"


PERSISTED = _Persisted()  # what ``Method.sink`` returns for a unit the method stored itself (module docstring)


class Method:
    """The base of every method (see the module docstring); subclasses define ``name``, ``prepare``, ``run_unit``
    and ``finish``, and override the optional steps they need."""

    name: str = ""
    needs_items: bool = True  # False: the method reads only contrast pairs (patching)
    modalities: tuple[str, ...] = ("text",)  # the prompt-set modalities it reads (medinterp.prompts: text, image)
    n_jobs: int = 1  # worker processes for local units
    finish_runs_model: bool = False  # True: finish runs forwards, so every rank joins it on partitioned weights

    def prepare(self, cell: Cell) -> Any:
        raise NotImplementedError

    def run_unit(self, handle: ModelHandle, work: Any, i: int) -> Any:
        raise NotImplementedError

    def local_unit(self, handle: ModelHandle, work: Any, j: int) -> Callable[[], Any]:
        raise NotImplementedError(f"{self.name}: no local units")

    def local_warm_up(self) -> Callable[[], None] | None:
        """A picklable function each local-unit worker runs once when it starts (e.g. to compile numba code)."""
        return None

    def open(self, handle: ModelHandle, work: Any) -> None:
        return None

    def sink(self, handle: ModelHandle, work: Any, i: int, result: Any) -> Any:
        """Rank 0: model unit ``i``'s result; returns what ``finish`` gets for it, or :data:`PERSISTED` when the
        method stored the unit itself (``finish`` then gets None and the driver keeps no checkpoint of it)."""
        return result

    def persisted(self, handle: ModelHandle, work: Any) -> set[int]:
        """Rank 0, after ``open``: the model units the method stored itself in an earlier run (their ``sink``
        returned :data:`PERSISTED`); the driver runs only the others."""
        return set()

    def close(self, handle: ModelHandle, work: Any, ok: bool) -> None:
        return None

    def finish(self, handle: ModelHandle, work: Any, results: Sequence[Any]) -> MethodResult:
        raise NotImplementedError


_METHODS = Registry("method")
register_method = _METHODS.register  # class decorator; the conf file is conf/method/<name>.yaml
method_class = _METHODS.get
