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


def map_lanes(kmap: Mapping[str, Any], domain: str, model: str, n_layers: int) -> list[Lane]:
    """The lanes of ``domain`` in a knowledge map made for ``model`` (``n_layers`` blocks), in map order.

    One line (MedinterpError) when the map is another model's, has another depth, or lacks the domain. A
    lane that selects no block (an empty or missing method) is kept with no blocks and a note.
    """
    got = kmap.get("model")
    if got != model:
        raise MedinterpError(f"map: made for model {got!r}, not {model!r}; map the model first or pass its own map")
    if kmap.get("n_layers") not in (None, n_layers):
        raise MedinterpError(f"map: has {kmap.get('n_layers')} layers, model {model!r} has {n_layers}")
    domains = kmap.get("domains", {})
    if domain not in domains:
        raise MedinterpError(f"map: has no domain {domain!r}; valid: {sorted(domains)}")
    lanes = []
    for name, entry in domains[domain].items():
        intervals = entry if name == "consensus" else entry.get("intervals", [])
        readouts = sorted(layers_of(tuple(iv) for iv in intervals))
        blocks = tuple(l - 1 for l in readouts if 1 <= l <= n_layers)
        notes = []
        if 0 in readouts:
            notes.append("read-out 0 (the embeddings) has no block: left out")
        if not blocks:
            notes.append("the lane selects no block")
        lanes.append(Lane(name, blocks, "; ".join(notes)))
    return lanes
