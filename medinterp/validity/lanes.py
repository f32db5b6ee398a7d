"""A knowledge map's lanes as blocks to intervene on.

``knowledge_map.json`` (medinterp/maps/synthesis.py) gives, per domain, each method's inclusive read-out
intervals and the ``consensus`` intervals. Read-out ``l`` is the residual stream after ``l`` blocks, written
by block ``l - 1``; so a lane's blocks are ``{l - 1 : l in its intervals, l >= 1}`` (read-out 0, the
embeddings, has no block; it is dropped and said so).
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from medinterp.errors import MedinterpError
from medinterp.maps.curves import layers_of


@dataclass(frozen=True)
class Lane:
    """One lane of a domain: its ``name`` (a method, or ``consensus``), its blocks and a note."""

    name: str
    blocks: tuple[int, ...]
    note: str = ""


def domain_entry(kmap: Mapping[str, Any], domain: str, model: str, n_layers: int | None = None) -> Mapping[str, Any]:
    """The map's entry for ``domain``, or one line (MedinterpError) when the map is another model's, has another
    depth than ``n_layers`` (None: not checked), lacks the domain, or a lane selects read-outs the map's model
    does not have (above its ``n_layers``). Needs no model: runners/validate.py calls it before loading one."""
    got = kmap.get("model")
    if got != model:
        raise MedinterpError(f"map: made for model {got!r}, not {model!r}; map the model first or pass its own map")
    depth = kmap.get("n_layers")
    if n_layers is not None and depth not in (None, n_layers):
        raise MedinterpError(f"map: has {depth} layers, model {model!r} has {n_layers}")
    domains = kmap.get("domains", {})
    if domain not in domains:
        raise MedinterpError(f"map: has no domain {domain!r}; valid: {sorted(domains)}")
    top = depth if n_layers is None else n_layers
    for name, entry in domains[domain].items():
        readouts = layers_of(tuple(iv) for iv in _intervals(name, entry))
        bad = sorted(l for l in readouts if l < 0 or (top is not None and l > top))
        if bad:
            valid = f"0..{top}" if top is not None else "0 and up"
            raise MedinterpError(f"map: lane {name!r} of {domain!r} selects read-outs {bad}, more than model "
                                 f"{model!r} has; valid: {valid}")
    return domains[domain]


def _intervals(name: str, entry: Any) -> list:
    return entry if name == "consensus" else entry.get("intervals", [])


def map_lanes(kmap: Mapping[str, Any], domain: str, model: str, n_layers: int) -> list[Lane]:
    """The lanes of ``domain`` in a knowledge map made for ``model`` (``n_layers`` blocks), in map order.

    One line (MedinterpError) for a bad map (:func:`domain_entry`). A lane that selects no block (an empty or
    missing method) is kept with no blocks and a note.
    """
    lanes = []
    for name, entry in domain_entry(kmap, domain, model, n_layers).items():
        readouts = sorted(layers_of(tuple(iv) for iv in _intervals(name, entry)))
        blocks = tuple(l - 1 for l in readouts if l >= 1)
        notes = []
        if 0 in readouts:
            notes.append("read-out 0 (the embeddings) has no block: left out")
        if not blocks:
            notes.append("the lane selects no block")
        lanes.append(Lane(name, blocks, "; ".join(notes)))
    return lanes
