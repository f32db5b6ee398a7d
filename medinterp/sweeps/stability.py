"""Stability of a knowledge map over a sweep: how often each layer is selected.

For every model × domain × method (and ``consensus``) × layer:

    fraction_selected = n_selected / n_settings

where ``n_settings`` counts the settings whose map has that channel (a method that did not run in a
setting, or a consensus undefined there, does not count) and ``n_selected`` those among them whose
intervals contain the layer (:func:`medinterp.sweeps.selection.selected_layers`).

Rows come in groups (``group_by``, ``group``):

- ``all`` / ``all``: over every setting;
- ``<key>`` / ``<value>`` (only when ≥ 2 keys vary): over the settings where that key has that value,
  i.e. across the other varied keys (``seed`` / ``0``: across templates at seed 0);
- ``setting`` / ``<label>``: one setting alone (fraction 0 or 1: its own map).
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

from medinterp.sweeps.jobs import Setting, value_label
from medinterp.sweeps.selection import CONSENSUS, selected_layers

SettingMaps = Sequence[tuple[Setting, Mapping[str, Mapping[str, Any]]]]   # (setting, {model: knowledge map})
COLUMNS = ("model", "domain", "method", "layer", "fraction_selected", "n_selected", "n_settings", "group_by", "group")


@dataclass(frozen=True)
class StabilityRow:
    model: str
    domain: str
    method: str
    layer: int
    fraction_selected: float
    n_selected: int
    n_settings: int
    group_by: str
    group: str


def groups(settings: Sequence[Setting]) -> list[tuple[str, str, list[int]]]:
    """(group_by, group, setting ids) for every group of the module docstring, in a stable order."""
    keys = list(settings[0].values) if settings else []
    out = [("all", "all", [s.id for s in settings])]
    if len(keys) >= 2:
        for key in keys:
            by_value: dict[str, list[int]] = {}
            for s in settings:
                by_value.setdefault(value_label(s.values[key]), []).append(s.id)
            out += [(key, value, ids) for value, ids in by_value.items()]
    out += [("setting", s.label, [s.id]) for s in settings]
    return out


def order(maps: Sequence[Mapping[str, Any]]) -> tuple[list[str], list[str], int]:
    """Domains and methods of a model's maps in map order (params first, then others), and n_layers."""
    domains: list[str] = []
    methods: list[str] = []
    for kmap in maps:
        for d in [*kmap["params"]["domains"], *kmap["domains"]]:
            if d not in domains and any(d in m["domains"] for m in maps):
                domains.append(d)
        for m in kmap["params"]["methods"]:
            if m not in methods:
                methods.append(m)
    return domains, methods + [CONSENSUS], max(int(m["n_layers"]) for m in maps)


def stability(setting_maps: SettingMaps) -> list[StabilityRow]:
    """Every row of the module docstring, for every model found in ``setting_maps``."""
    settings = [s for s, _ in setting_maps]
    models = sorted({m for _, maps in setting_maps for m in maps})
    rows: list[StabilityRow] = []
    for model in models:
        selected = {s.id: selected_layers(maps[model]) for s, maps in setting_maps if model in maps}
        domains, methods, n_layers = order([maps[model] for _, maps in setting_maps if model in maps])
        for group_by, group, ids in groups(settings):
            ids = [i for i in ids if i in selected]
            for domain in domains:
                for method in methods:
                    present = [selected[i][(domain, method)] for i in ids if (domain, method) in selected[i]]
                    if not present:
                        continue
                    for layer in range(n_layers + 1):
                        k = sum(layer in layers for layers in present)
                        rows.append(StabilityRow(model, domain, method, layer, k / len(present), k, len(present),
                                                 group_by, group))
    return rows


def as_json(rows: Sequence[StabilityRow]) -> dict[str, Any]:
    """Nested view of the rows: model → group_by → group → domain → method → {n_settings, fraction[layer]}."""
    out: dict[str, Any] = {}
    for r in rows:
        entry = (out.setdefault(r.model, {}).setdefault(r.group_by, {}).setdefault(r.group, {})
                 .setdefault(r.domain, {}).setdefault(r.method, {"n_settings": r.n_settings, "fraction": []}))
        entry["fraction"].append(r.fraction_selected)  # rows are emitted layer 0, 1, ... in order
    return out


def as_dicts(rows: Sequence[StabilityRow]) -> list[dict[str, Any]]:
    return [asdict(r) for r in rows]
