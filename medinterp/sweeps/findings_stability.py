"""Do the findings hold across a robustness sweep? Each finding's verdict in every setting, compared.

Per setting and model, the findings (:func:`medinterp.maps.findings.findings`) are computed from that
setting's rows (methods sweeps: the per_layer tables, with the setting's knowledge map for the silhouette
curves of ``collapse``; maps sweeps: the job's own findings.json, where synthesize wrote one). Each finding
reduces to claims with a verdict (:func:`medinterp.maps.findings.verdicts`: a sign, beats-the-null or
not, flagged or not). A finding is

- ``stable: true`` when every claim has the same verdict in every setting (a claim missing in a setting
  counts as the verdict ``absent``);
- ``stable: false`` otherwise, with ``disagreeing_settings``: the settings whose verdict on some claim
  differs from that claim's most common verdict (ties: the verdict met first, in setting order), and
  ``claims``: every claim's verdict per setting;
- ``stable: null`` with a ``stable_note`` when there is nothing to compare: fewer than two settings have
  the model, or the finding is unavailable in all of them.

The robustness experiment (conf/experiment/robustness.yaml) varies template, seed and the umap method's
template centring (``robustness.center``), so ``stable`` says whether a finding survives all three.
"""
from __future__ import annotations

import copy
import json
from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Any

from medinterp.maps.findings import FINDINGS, FindingsParams, findings, verdicts
from medinterp.sweeps.jobs import Setting

SettingFindings = Sequence[tuple[Setting, Mapping[str, Mapping[str, Any]]]]   # (setting, {model: findings})
ABSENT = "absent"


def silhouette_curves(kmap: Mapping[str, Any]) -> dict[str, list[float | None]]:
    """The raw umap silhouette curve per domain of a knowledge map (what synthesize hands to ``collapse``)."""
    return {d: e["umap"]["raw"] for d, e in kmap["domains"].items() if "umap" in e and e["umap"].get("rule") == "window"}


def setting_findings(kind: str, settings: Sequence[Setting], maps: Sequence[tuple[Setting, Mapping[str, dict]]],
                     params: FindingsParams | None = None) -> list[tuple[Setting, dict[str, dict]]]:
    """(setting, {model: findings}) for every setting (see the module docstring)."""
    params = params or FindingsParams()
    kmaps = {s.id: by_model for s, by_model in maps}
    out = []
    for setting in settings:
        found: dict[str, dict] = {}
        if kind == "maps":
            for job in setting.jobs:
                for model, path in job.maps.items():
                    if (path.parent / "findings.json").is_file():
                        found[model] = json.loads((path.parent / "findings.json").read_text(encoding="utf-8"))
        else:
            rows = [r for job in setting.jobs for r in job.rows]
            for model in sorted({r.model for r in rows}):
                kmap = kmaps.get(setting.id, {}).get(model)
                found[model] = findings([r for r in rows if r.model == model],
                                        silhouette_curves(kmap) if kmap else {}, params)
        out.append((setting, found))
    return out


def _modal(values: Sequence[str]) -> str:
    counts = Counter(values)   # insertion order breaks ties: the verdict met first
    return max(counts, key=lambda v: counts[v])


def stability(per_setting: SettingFindings) -> dict[str, dict[str, dict[str, Any]]]:
    """{model: {finding: {stable, stable_note, disagreeing_settings, claims}}} (see the module docstring)."""
    models = sorted({m for _, by_model in per_setting for m in by_model})
    out: dict[str, dict[str, dict[str, Any]]] = {}
    for model in models:
        present = [(s, by_model[model]) for s, by_model in per_setting if model in by_model]
        judged = [(s.label, verdicts(f)) for s, f in present]
        out[model] = {}
        for finding in FINDINGS:
            claims = sorted({c for _, v in judged for c in v[finding]})
            table = {c: {label: v[finding].get(c, ABSENT) for label, v in judged} for c in claims}
            if len(present) < 2:
                entry = {"stable": None, "stable_note": f"{len(present)} setting: nothing to compare",
                         "disagreeing_settings": []}
            elif not claims:
                entry = {"stable": None, "stable_note": "not available in any setting", "disagreeing_settings": []}
            else:
                disagree: list[str] = []
                for c, by_label in table.items():
                    mode = _modal(list(by_label.values()))
                    disagree += [label for label, v in by_label.items() if v != mode and label not in disagree]
                order = [s.label for s, _ in present]
                disagree.sort(key=order.index)
                entry = {"stable": not disagree, "disagreeing_settings": disagree,
                         "stable_note": (f"same verdict in all {len(present)} settings" if not disagree else
                                         f"{len(disagree)} of {len(present)} settings disagree")}
            out[model][finding] = {**entry, "claims": table}
    return out


def with_stability(found: Mapping[str, Any], entry: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
    """A copy of one model's findings with each finding's ``stable`` fields taken from ``entry``."""
    out = copy.deepcopy(dict(found))
    for finding in FINDINGS:
        if finding in out and finding in entry:
            e = entry[finding]
            out[finding].update(stable=e["stable"], stable_note=e["stable_note"],
                                disagreeing_settings=list(e["disagreeing_settings"]))
    return out


def brief(table: Mapping[str, Mapping[str, Mapping[str, Any]]]) -> dict[str, dict[str, dict[str, Any]]]:
    """The table without the per-claim verdicts (for summary.json)."""
    return {m: {f: {k: v for k, v in e.items() if k != "claims"} for f, e in by_f.items()} for m, by_f in table.items()}
