"""Knowledge maps: per-layer results of earlier runs → the layers where each domain's knowledge sits.

Reads only ``per_layer.csv`` tables (docs/results-format.md), never a model. For every model, domain and
method (a *channel*), one metric's curve is smoothed and reduced to layer intervals by the rules of
methods.md §1.5 (medinterp/maps/curves.py):

- ``umap``: the curve is the mean of the domain's labelings' ``silhouette_umap`` curves (progression:
  only the ``stage/<disease>`` labelings), and the interval is the steepest 3-layer rise ("window");
- ``umap`` on age: the layers of top R² / anisotropy on ``age/pooled`` (:func:`curves.age_layers`);
- ``saliency`` (``grad_block``), ``ablation`` (``kl``), ``patching`` (``p_resid_diff``): runs above the
  curve's 75th percentile, ≥ 2 layers, ≤ 3 runs ("segments");
- ``geometry`` (off by default; ``map.methods=[...,geometry]``): the ``id_twonn`` curve (mean over its labelings),
  the "window" rule;
- consensus: layers selected by ≥ ``min_methods`` methods.

Layers are read-out indices (medinterp/methods/base.py); rows at layer −1 (baselines) and metrics other
than the channel's (``grad_embed`` at 0, ``grad_unembed`` at n_layers + 1, ``*_null``) are never map
layers. ``n_layers`` of a model is the largest layer of its channel rows. A method or domain without rows
is recorded in ``missing``, never an error.
"""
from __future__ import annotations

import fnmatch
import math
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from medinterp.errors import MedinterpError, unknown_choice
from medinterp.io import save_png, write_json
from medinterp.maps import curves
from medinterp.maps.findings import FindingsParams, findings
from medinterp.maps.specificity import specificity, specificity_summary
from medinterp.results import Row, read_rows
from medinterp.validation import is_int, is_number

RULES = ("window", "segments")
CONTRASTS = (None, "control")  # map.contrast: the lanes' view (null: absolute curves; control: specificity)
DEFAULT_CHANNELS = {
    "umap": {"metric": "silhouette_umap", "rule": "window"},
    "saliency": {"metric": "grad_block", "rule": "segments"},
    "ablation": {"metric": "kl", "rule": "segments"},
    "patching": {"metric": "p_resid_diff", "rule": "segments"},
    "geometry": {"metric": "id_twonn", "rule": "window"},  # a lane only when listed in ``methods`` (off by default)
}
DEFAULT_METHODS = ("umap", "saliency", "ablation", "patching")  # the map's lanes unless ``methods`` says otherwise
METHOD_METRICS = {  # what each method writes (fnmatch patterns; medinterp/methods/), for checking channel metrics
    "umap": ("silhouette_*", "anisotropy*", "r2_*", "discontinuity*", "effective_rank*", "circular_*", "closure_*"),
    "saliency": ("grad_*", "loss"),
    "ablation": ("kl", "dlogp", "judge_*"),
    "patching": ("p_*", "ld_*"),
    "geometry": ("linearity*", "nonlinearity", "anisotropy_*", "id_*", "self_similarity*", "intra_similarity*",
                 "mev*", "lens_*"),
}
DEFAULT_DOMAINS = ("age", "symptoms", "disease", "progression", "drugs", "dosage")


# -- parameters --------------------------------------------------------------------------------------
def _check_keys(kind: str, cfg: Mapping[str, Any], cls: type) -> None:
    """Reject keys of ``cfg`` that are not fields of the dataclass ``cls``."""
    unknown = sorted(set(cfg) - set(cls.__dataclass_fields__))
    if unknown:
        raise unknown_choice(kind, unknown[0], cls.__dataclass_fields__)


def _build(kind: str, cls: type, cfg: Mapping[str, Any]):
    """``cls(**cfg)`` after checking the keys (a typo names the valid ones instead of a TypeError)."""
    _check_keys(kind, cfg, cls)
    return cls(**cfg)


def _check_range(name: str, value: float, low: float, high: float) -> None:
    """A number in [low, high], or a one-line error naming the parameter."""
    if not is_number(value) or not low <= value <= high:
        raise MedinterpError(f"The map parameter '{name}' must be in [{low:g}, {high:g}]. Got {value!r} instead.")


@dataclass(frozen=True)
class Channel:
    """Which metric a method's map curve is read from, and which rule turns it into intervals."""

    metric: str
    rule: str = "segments"

    def __post_init__(self) -> None:
        if self.rule not in RULES:
            raise unknown_choice("map rule", self.rule, RULES)


@dataclass(frozen=True)
class AgeRule:
    """The age channel (replaces ``window`` for ``method`` on ``domain``); see :func:`curves.age_layers`."""

    domain: str = "age"
    method: str = "umap"
    labeling: str = "age/pooled"
    r2_metric: str | None = "r2_raw"            # None: anisotropy only
    anisotropy_metric: str | None = "anisotropy"  # None: R² only
    tolerance: float = 0.02                      # R² layers: smoothed R² ≥ max − tolerance
    anisotropy_percentile: float = 75.0          # anisotropy layers: top_segments at this percentile

    def __post_init__(self) -> None:
        if self.r2_metric is None and self.anisotropy_metric is None:
            raise MedinterpError("The age rule needs r2_metric or anisotropy_metric; both are null.")
        _check_range("age.tolerance", self.tolerance, 0.0, math.inf)
        _check_range("age.anisotropy_percentile", self.anisotropy_percentile, 0.0, 100.0)


@dataclass(frozen=True)
class MapParams:
    """Every knowledge-map setting (conf/synthesis/default.yaml mirrors these fields)."""

    sigma: float = 1.0           # Gaussian smoothing σ in layers (paper: 1.0)
    window: int = 3              # umap: layers l..l+window−1, rise s(l+window−1) − s(l)
    percentile: float = 75.0     # segments: keep smoothed values above this percentile of the curve
    min_segment: int = 2         # segments: at least this many consecutive layers
    max_segments: int = 3        # segments: keep this many (largest area above the threshold)
    min_methods: int = 2         # consensus: layers selected by at least this many methods
    methods: tuple[str, ...] = DEFAULT_METHODS
    domains: tuple[str, ...] = DEFAULT_DOMAINS   # expected domains (absent ones are listed as missing)
    channels: Mapping[str, Channel] = field(default_factory=lambda: {k: Channel(**v) for k, v in DEFAULT_CHANNELS.items()})
    labelings: Mapping[str, Mapping[str, tuple[str, ...]]] = field(
        default_factory=lambda: {"umap": {"progression": ("stage/*",)}})  # method → domain → fnmatch patterns
    age: AgeRule | None = field(default_factory=AgeRule)  # None: age uses the plain umap rule
    contrast: str | None = None  # None: lanes from the absolute curves; "control": from the specificity view
    control_domain: str = "control"  # the non-medical control prompt set the specificity view subtracts
    specific_methods: tuple[str, ...] = ("saliency", "ablation", "patching")  # methods with a specificity view

    def __post_init__(self) -> None:
        _check_range("sigma", self.sigma, 0.0, math.inf)
        _check_range("percentile", self.percentile, 0.0, 100.0)
        for name, low in (("window", 2), ("min_segment", 1), ("max_segments", 1), ("min_methods", 1)):
            value = getattr(self, name)
            if not is_int(value) or value < low:
                raise MedinterpError(f"The map parameter '{name}' must be an integer >= {low}. Got {value!r} instead.")
        set_ = object.__setattr__  # frozen: normalise containers in place
        set_(self, "channels", {k: v if isinstance(v, Channel) else _build("channel", Channel, v)
                                for k, v in self.channels.items()})
        set_(self, "methods", tuple(self.methods))
        set_(self, "domains", tuple(self.domains))
        set_(self, "labelings", {m: {d: (p,) if isinstance(p, str) else tuple(p) for d, p in (by_domain or {}).items()}
                                 for m, by_domain in (self.labelings or {}).items()})
        if isinstance(self.age, Mapping):
            set_(self, "age", _build("age rule parameter", AgeRule, self.age))
        for method in self.methods:
            if method not in self.channels:
                raise unknown_choice("method", method, self.channels)
        if len(set(self.methods)) != len(self.methods):
            raise MedinterpError(f"The map parameter 'methods' lists a method twice: {list(self.methods)}.")
        if self.contrast not in CONTRASTS:
            raise unknown_choice("map.contrast", self.contrast, ["null", *filter(None, CONTRASTS)])
        set_(self, "specific_methods", tuple(self.specific_methods))

    @classmethod
    def from_dict(cls, cfg: Mapping[str, Any]) -> MapParams:
        """Build from a plain dict (e.g. the resolved ``map`` config); unknown keys are an error."""
        _check_keys("map parameter", cfg, cls)
        return cls(**cfg)

    def as_dict(self) -> dict[str, Any]:
        """JSON-able copy (written into knowledge_map.json)."""
        out = asdict(self)
        out["methods"], out["domains"] = list(self.methods), list(self.domains)
        out["specific_methods"] = list(self.specific_methods)
        out["labelings"] = {m: {d: list(p) for d, p in by.items()} for m, by in self.labelings.items()}
        return out


def params_from_config(cfg: Mapping[str, Any]) -> tuple[MapParams, FindingsParams]:
    """(MapParams, FindingsParams) from the ``map`` config dict (its ``findings`` key holds the latter)."""
    cfg = dict(cfg)
    found = dict(cfg.pop("findings", None) or {})
    _check_keys("findings parameter", found, FindingsParams)
    return MapParams.from_dict(cfg), FindingsParams(**found)


# -- reading -----------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Table:
    """All rows read, each with the file it came from (relative to the folder it was found under)."""

    rows: tuple[Row, ...]
    sources: tuple[str, ...]

    def models(self) -> list[str]:
        return sorted({r.model for r in self.rows})

    def of(self, model: str) -> list[tuple[Row, str]]:
        return [(r, s) for r, s in zip(self.rows, self.sources) if r.model == model]


def find_tables(paths: str | Path | Iterable[str | Path]) -> list[tuple[Path, str]]:
    """(file, display name) of every per_layer CSV named by ``paths``.

    A file is taken as is; a folder is searched recursively for ``per_layer.csv`` (a folder without one is
    an error naming it). Display names are relative to the folder given, so maps do not embed host paths.
    """
    items = [paths] if isinstance(paths, (str, Path)) else list(paths)
    if not items:
        raise MedinterpError("no runs given: pass runs=<folder | per_layer.csv | [list of them]>")
    found: list[tuple[Path, str]] = []
    for item in items:
        path = Path(item)
        if path.is_file():
            found.append((path, path.name))
        elif path.is_dir():
            files = sorted(path.rglob("per_layer.csv"))
            if not files:
                raise MedinterpError(f"no per_layer.csv under {str(path)!r}")
            found += [(f, f.relative_to(path).as_posix()) for f in files]
        else:
            raise MedinterpError(f"runs: no such file or folder {str(path)!r}")
    return found


def load_table(paths: str | Path | Iterable[str | Path]) -> Table:
    """Read every table of :func:`find_tables`; the same measurement in two places is an error."""
    rows: list[Row] = []
    sources: list[str] = []
    seen: dict[tuple, str] = {}
    for path, name in find_tables(paths):
        for r in read_rows(path):
            key = (r.model, r.domain, r.method, r.labeling, r.metric, r.layer)
            if key in seen:
                raise MedinterpError(f"{name!r} repeats {'/'.join(map(str, key))} from {seen[key]!r}; "
                                     "pass one run per (model, domain, method)")
            seen[key] = name
            rows.append(r)
            sources.append(name)
    return Table(tuple(rows), tuple(sources))


# -- curves ------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Curve:
    """A per-layer curve over consecutive layers ``first..first+len−1`` (interior gaps interpolated)."""

    first: int
    raw: np.ndarray
    labelings: tuple[str, ...]
    sources: tuple[str, ...]
    filled: tuple[int, ...] = ()
    nan_layers: Mapping[int, str] = field(default_factory=dict)  # layer → note, where every row is NaN
    half_width: np.ndarray | None = None  # per layer, the mean over labelings of (ci_high − ci_low) / 2 (NaN: none)

    @property
    def last(self) -> int:
        return self.first + len(self.raw) - 1


def mean_curve(rows: Sequence[tuple[Row, str]]) -> Curve | None:
    """The mean over labelings of their per-layer values (layers ≥ 0, finite values only).

    A layer missing for some labelings averages the others; a layer missing for all, inside the range,
    is linearly interpolated and listed in ``filled``. A layer whose rows are all NaN (a value withheld,
    e.g. ``judge coverage 0.00 < 0.80`` or ``degenerate``) is never read as a number: it is listed in
    ``nan_layers`` with its row's note (and, inside the range, interpolated like a missing layer). None
    when no finite value is left.
    """
    by_layer: dict[int, list[float]] = defaultdict(list)
    halves: dict[int, list[float]] = defaultdict(list)
    nan_notes: dict[int, str] = {}
    for r, _ in rows:
        if r.layer >= 0 and math.isfinite(r.value):
            by_layer[r.layer].append(r.value)
            if math.isfinite(r.ci_low) and math.isfinite(r.ci_high):
                halves[r.layer].append((r.ci_high - r.ci_low) / 2)
        elif r.layer >= 0:
            nan_notes.setdefault(r.layer, r.note or "NaN (no note)")
    nan_layers = {layer: note for layer, note in sorted(nan_notes.items()) if layer not in by_layer}
    if not by_layer:
        return None
    first, last = min(by_layer), max(by_layer)
    layers = np.arange(first, last + 1)
    present = np.array([layer in by_layer for layer in layers])
    values = np.array([np.mean(by_layer[layer]) if layer in by_layer else np.nan for layer in layers])
    values[~present] = np.interp(layers[~present], layers[present], values[present])
    used = [(r, s) for r, s in rows if r.layer >= 0 and math.isfinite(r.value)]
    half = np.array([np.mean(halves[layer]) if halves.get(layer) else np.nan for layer in layers])
    return Curve(first, values, tuple(sorted({r.labeling for r, _ in used})), tuple(sorted({s for _, s in used})),
                 tuple(int(x) for x in layers[~present]), nan_layers, half)


def _shift(intervals: Iterable[tuple[int, int]], first: int) -> list[list[int]]:
    return [[a + first, b + first] for a, b in intervals]


def _by_layer(curve: Curve, values: np.ndarray, n_layers: int) -> list[float | None]:
    """Values of a curve on layers 0..n_layers (None where the curve has none)."""
    out: list[float | None] = [None] * (n_layers + 1)
    for i, v in enumerate(values):
        if 0 <= curve.first + i <= n_layers:
            out[curve.first + i] = float(v)
    return out


# -- map ---------------------------------------------------------------------------------------------
class _Index:
    """Rows of one model grouped by (domain, method) and metric."""

    def __init__(self, rows: Sequence[tuple[Row, str]]):
        self.groups: dict[tuple[str, str], list[tuple[Row, str]]] = defaultdict(list)
        for r, s in rows:
            self.groups[(r.domain, r.method)].append((r, s))

    def domains(self) -> set[str]:
        return {d for d, _ in self.groups}

    def select(self, domain: str, method: str, metric: str, patterns: Sequence[str] = ("*",)) -> list[tuple[Row, str]]:
        return [(r, s) for r, s in self.groups.get((domain, method), ())
                if r.metric == metric and any(fnmatch.fnmatchcase(r.labeling, p) for p in patterns)]

    def metrics(self, domain: str, method: str) -> list[str]:
        return sorted({r.metric for r, _ in self.groups.get((domain, method), ())})


def _channel_curves(index: _Index, domain: str, method: str, params: MapParams) -> tuple[dict[str, Curve], str | None]:
    """The raw curve(s) a channel needs ({role: Curve}), or ({}, reason it is missing)."""
    if (domain, method) not in index.groups:
        return {}, "no rows"
    age = params.age
    if age is not None and domain == age.domain and method == age.method:
        wanted = {"r2": age.r2_metric, "anisotropy": age.anisotropy_metric}
        found = {role: mean_curve(index.select(domain, method, metric, (age.labeling,)))
                 for role, metric in wanted.items() if metric is not None}
        found = {role: c for role, c in found.items() if c is not None}
        names = " or ".join(m for m in wanted.values() if m)
        return found, None if found else f"no {names} rows on {age.labeling} (has: {', '.join(index.metrics(domain, method))})"
    metric = params.channels[method].metric
    patterns = params.labelings.get(method, {}).get(domain, ("*",))
    selected = index.select(domain, method, metric, patterns)
    curve = mean_curve(selected)
    if curve is None:
        where = "" if patterns == ("*",) else f" on labelings {list(patterns)}"
        nan = [r for r, _ in selected if r.layer >= 0]
        if nan:  # rows exist, but every value was withheld: say why instead of "no rows"
            return {}, f"all {len(nan)} {metric} rows{where} are NaN ({nan[0].note or 'no note'})"
        return {}, f"no {metric} rows{where} (has: {', '.join(index.metrics(domain, method))})"
    return {"main": curve}, None


def _curves_json(c: Curve, smoothed: np.ndarray, n_layers: int) -> dict[str, list[float | None]]:
    return {"curve": _by_layer(c, smoothed, n_layers), "raw": _by_layer(c, c.raw, n_layers)}


def _plain_entry(c: Curve, method: str, params: MapParams, n_layers: int) -> dict[str, Any]:
    """A window or segments channel: its intervals on the smoothed curve."""
    s = curves.smooth(c.raw, params.sigma)
    channel = params.channels[method]
    if channel.rule == "window":
        best = curves.steepest_window(s, params.window)
        intervals = [best] if best else []
    else:
        intervals = curves.top_segments(s, params.percentile, params.min_segment, params.max_segments)
    return {"metric": channel.metric, "rule": channel.rule, "intervals": _shift(intervals, c.first),
            **_curves_json(c, s, n_layers), "labelings": list(c.labelings)}


def _age_entry(r2: Curve | None, aniso: Curve | None, params: MapParams, n_layers: int) -> dict[str, Any]:
    """The age channel: R² near-max layers ∪ anisotropy segments (the main curve is R², else anisotropy)."""
    age = params.age
    s_r2 = curves.smooth(r2.raw, params.sigma) if r2 else None
    s_an = curves.smooth(aniso.raw, params.sigma) if aniso else None
    r2_runs, an_runs = curves.age_layers(s_r2, s_an, age.tolerance, age.anisotropy_percentile,
                                         params.min_segment, params.max_segments)
    r2_iv = _shift(r2_runs, r2.first) if r2 else []
    an_iv = _shift(an_runs, aniso.first) if aniso else []
    both = curves.union([tuple(iv) for iv in r2_iv], [tuple(iv) for iv in an_iv])
    main, s_main, metric = (r2, s_r2, age.r2_metric) if r2 else (aniso, s_an, age.anisotropy_metric)
    entry = {"metric": metric, "rule": "age", "intervals": [list(iv) for iv in both],
             **_curves_json(main, s_main, n_layers), "labelings": [age.labeling], "r2_intervals": r2_iv}
    if r2 and aniso:
        entry["anisotropy"] = {"metric": age.anisotropy_metric, "intervals": an_iv, **_curves_json(aniso, s_an, n_layers)}
    return entry


def _entry(found: dict[str, Curve], method: str, params: MapParams, n_layers: int) -> dict[str, Any]:
    """The knowledge_map.json entry of one channel: intervals, smoothed and raw curves, provenance."""
    if "main" in found:
        entry = _plain_entry(found["main"], method, params, n_layers)
    else:
        entry = _age_entry(found.get("r2"), found.get("anisotropy"), params, n_layers)
    entry["source"] = "; ".join(sorted({s for c in found.values() for s in c.sources}))
    filled = sorted({layer for c in found.values() for layer in c.filled})
    if filled:
        entry["interpolated_layers"] = filled
    nan_layers = {str(layer): note for c in found.values() for layer, note in sorted(c.nan_layers.items())}
    if nan_layers:
        entry["nan_layers"] = nan_layers
    return entry


def _check_channel_metrics(index: _Index, params: MapParams) -> None:
    """Each channel's metric must be one its method can write (:data:`METHOD_METRICS`) or one in its rows.

    A typo (``map.channels.ablation.metric=kl_div``) would otherwise drop the method's lane from every
    domain without a word; a real metric that a table lacks stays a per-domain ``missing`` note.
    """
    for method in params.methods:
        metric = params.channels[method].metric
        patterns = METHOD_METRICS.get(method, ())
        have = {m for d in index.domains() for m in index.metrics(d, method)}
        if metric in have or any(fnmatch.fnmatchcase(metric, p) for p in patterns):
            continue
        if not patterns and not have:  # a method of its own with no rows: nothing to check against
            continue
        raise MedinterpError(f"The 'map.channels.{method}.metric' setting names no metric of the {method} method: "
                             f"{metric!r}; valid: {', '.join(sorted(set(patterns) | have))}.")


def build_map(rows: Sequence[tuple[Row, str]], params: MapParams) -> dict[str, Any]:
    """The knowledge map of one model from its (row, source) pairs (see the module docstring)."""
    models = {r.model for r, _ in rows}
    if len(models) != 1:
        raise MedinterpError(f"build_map needs the rows of exactly one model; got {sorted(models)}")
    index = _Index(rows)
    domains = list(params.domains) + sorted(index.domains() - set(params.domains))
    _check_channel_metrics(index, params)
    found, missing = {}, []
    for domain in domains:
        for method in params.methods:
            curves_, reason = _channel_curves(index, domain, method, params)
            if reason:
                if domain == params.control_domain and method not in params.specific_methods:
                    continue  # the control is run only for the specificity view's methods: not a gap
                missing.append({"domain": domain, "method": method, "reason": reason})
            else:
                found[(domain, method)] = curves_
    n_layers = max((c.last for cs in found.values() for c in cs.values()), default=0)
    out: dict[str, dict[str, Any]] = {}
    for (domain, method), cs in found.items():
        out.setdefault(domain, {})[method] = _entry(cs, method, params, n_layers)
    _add_specificity(out, found, params, n_layers, missing)
    for domain, entries in out.items():
        agreed, _ = curves.consensus([[tuple(iv) for iv in e["intervals"]] for e in entries.values()], params.min_methods)
        entries["consensus"] = [list(iv) for iv in agreed]
    return {"model": next(iter(models)), "n_layers": n_layers, "params": params.as_dict(), "domains": out,
            "missing": missing}


def _add_specificity(out: dict[str, dict[str, Any]], found: Mapping[tuple[str, str], dict[str, Curve]],
                     params: MapParams, n_layers: int, missing: list[dict[str, str]]) -> None:
    """Give each specific method's entry of every medical domain its ``specificity`` view (medinterp/maps/specificity.py)
    when the control domain has that method's curve; with ``contrast="control"`` the view's intervals become the
    lane's (the absolute ones kept as ``absolute_intervals``), and a lane without a control curve is listed in
    ``missing`` (it keeps its absolute intervals, marked ``view: absolute``)."""
    control = params.control_domain
    for (domain, method), cs in found.items():
        if domain == control or method not in params.specific_methods or "main" not in cs:
            continue
        entry = out[domain][method]
        base = found.get((control, method), {}).get("main")
        spec = None if base is None else specificity(cs["main"].raw, cs["main"].first, base.raw, base.first,
                                                    cs["main"].half_width, base.half_width)
        if spec is not None:
            view = _plain_entry(Curve(spec.first, spec.value, (), ()), method, params, n_layers)
            del view["labelings"], view["metric"]
            half = Curve(spec.first, spec.half_width, (), ())
            view["half_width"] = _by_layer(half, spec.half_width, n_layers)
            entry["specificity"] = {"control": control, **view}
        if params.contrast != "control":
            continue
        if spec is None:
            why = "no control rows" if base is None else "fewer than 2 shared layers or a flat curve"
            missing.append({"domain": domain, "method": method, "reason": f"specificity: {why} ({control})"})
            entry["view"] = "absolute"
        else:
            entry["absolute_intervals"], entry["intervals"] = entry["intervals"], entry["specificity"]["intervals"]
            entry["view"] = "specificity"


def map_silhouettes(kmap: Mapping[str, Any]) -> dict[str, list[float | None]]:
    """Per domain, the raw mean silhouette curve of a map's ``umap`` window channel (what the collapse finding reads)."""
    return {d: e["umap"]["raw"] for d, e in kmap["domains"].items() if "umap" in e and e["umap"]["rule"] == "window"}


# -- the whole stage ---------------------------------------------------------------------------------
def synthesize(paths: str | Path | Iterable[str | Path], out_dir: str | Path, params: MapParams | None = None,
               findings_params: FindingsParams | None = None, *, figures: bool = True, with_findings: bool = True,
               table: Table | None = None) -> list[Path]:
    """Read the tables under ``paths`` and write, for each model, ``<out_dir>/<model>/`` with
    knowledge_map.json, knowledge_map.png, findings.json and findings.png. Returns the model folders.

    Sweeps turn the slow parts off: ``figures=False`` skips both PNGs, ``with_findings=False`` skips
    findings.json/png, and ``table`` passes rows already read by :func:`load_table` (``paths`` is then
    only used in messages), so a multirun over map parameters reads the tables once.
    """
    params = params or MapParams()
    findings_params = findings_params or FindingsParams()
    table = table if table is not None else load_table(paths)
    if not table.rows:
        raise MedinterpError(f"the per_layer tables under {paths!r} have no rows")
    folders = []
    for model in table.models():
        rows = table.of(model)
        folder = Path(out_dir) / model
        kmap = build_map(rows, params)
        write_json(folder / "knowledge_map.json", kmap)
        if figures:
            from medinterp.maps.plot import knowledge_map_figure

            save_png(knowledge_map_figure(kmap), folder / "knowledge_map.png")
        if with_findings:
            found = findings([r for r, _ in rows], map_silhouettes(kmap), findings_params)
            found["specificity"] = specificity_summary(kmap)
            write_json(folder / "findings.json", found)
            if figures:
                from medinterp.maps.plot import findings_figure

                save_png(findings_figure(found), folder / "findings.png")
        folders.append(folder)
    return folders
