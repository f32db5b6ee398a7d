"""What a knowledge map selects, and how much two selections agree.

A knowledge map (medinterp/maps/synthesis.py ``build_map``) gives, per domain and method, layer
intervals ``[[a, b], ...]`` (inclusive) and the domain's ``consensus`` intervals. Sweep summaries compare
these selections across settings as *sets of layers*:

- :func:`selected_layers`: ``{(domain, method): frozenset(layers)}``, with method ``"consensus"`` for
  domains that have at least ``min_methods`` method entries (else the consensus is empty by construction
  and would only add zeros);
- :func:`jaccard`: |A ∩ B| / |A ∪ B|, and 1.0 for two empty sets (both select nothing: they agree);
- :func:`best_layer`: the layer of the maximum of a channel's smoothed curve (earliest on ties);
- :func:`map_agreement`: the mean, over domains with ≥ 2 methods, of the mean pairwise Jaccard between the
  methods' selections (1 = every method picks the same layers).
"""
from __future__ import annotations

import itertools
import math
from collections.abc import Iterable, Mapping
from typing import Any

CONSENSUS = "consensus"


def layers_of(intervals: Iterable[Iterable[int]]) -> frozenset[int]:
    """Every layer of inclusive intervals ``[[a, b], ...]``."""
    return frozenset(layer for a, b in intervals for layer in range(int(a), int(b) + 1))


def method_entries(domain_entry: Mapping[str, Any]) -> dict[str, Mapping[str, Any]]:
    """The method channels of one domain of a map (everything but ``consensus``)."""
    return {m: e for m, e in domain_entry.items() if m != CONSENSUS}


def selected_layers(kmap: Mapping[str, Any]) -> dict[tuple[str, str], frozenset[int]]:
    """``{(domain, method): layers}`` of a map, plus ``(domain, "consensus")`` where it is defined."""
    min_methods = int(kmap["params"]["min_methods"])
    out: dict[tuple[str, str], frozenset[int]] = {}
    for domain, entry in kmap["domains"].items():
        methods = method_entries(entry)
        for method, channel in methods.items():
            out[(domain, method)] = layers_of(channel["intervals"])
        if len(methods) >= min_methods:
            out[(domain, CONSENSUS)] = layers_of(entry.get(CONSENSUS, []))
    return out


def jaccard(a: Iterable[int], b: Iterable[int]) -> float:
    """|A ∩ B| / |A ∪ B|; two empty sets agree completely (1.0)."""
    a, b = set(a), set(b)
    union = a | b
    return 1.0 if not union else len(a & b) / len(union)


def mean_pairwise_jaccard(sets: list[frozenset[int]]) -> tuple[float, float]:
    """(mean, min) of the Jaccard index over all pairs; (nan, nan) with fewer than two sets."""
    values = [jaccard(a, b) for a, b in itertools.combinations(sets, 2)]
    if not values:
        return math.nan, math.nan
    return sum(values) / len(values), min(values)


def best_layer(channel: Mapping[str, Any]) -> int | None:
    """The layer where the channel's smoothed ``curve`` peaks (earliest on ties); None without values."""
    values = [(v, layer) for layer, v in enumerate(channel.get("curve", [])) if v is not None and math.isfinite(v)]
    if not values:
        return None
    peak = max(v for v, _ in values)
    return min(layer for v, layer in values if v == peak)


def map_agreement(kmap: Mapping[str, Any]) -> float:
    """Mean over domains with ≥ 2 methods of the mean pairwise Jaccard of the methods' layers (nan: none)."""
    per_domain = []
    for entry in kmap["domains"].values():
        sets = [layers_of(e["intervals"]) for e in method_entries(entry).values()]
        if len(sets) >= 2:
            per_domain.append(mean_pairwise_jaccard(sets)[0])
    return sum(per_domain) / len(per_domain) if per_domain else math.nan
