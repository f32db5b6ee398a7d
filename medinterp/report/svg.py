"""Per-layer curves with CI bands as small inline SVGs, drawn from a run's per_layer rows (no JavaScript).

One panel per (labeling, metric): the metric's value per layer as a line with dots and its 95 % CI as a
shaded band; its shuffled null (``<metric>_null`` on the same labeling, when it has per-layer rows) as
a dotted grey line with a grey band; the labeling's layer-independent baselines (layer −1) of the same
family (the metric's first word: ``silhouette_surface`` with ``silhouette_umap``, ``anisotropy_null``
with ``anisotropy``) as dashed horizontal lines. NaN values break the line. Baselines of no panel's
family (``loss``, ``ld_clean``) are left to the report's baseline table.

    panels(rows) -> [Panel, ...]        panel_svg(panel) -> '<svg ...>...</svg>'
"""
from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass

from matplotlib.ticker import MaxNLocator

from medinterp.report.html import text
from medinterp.results import Row

WIDTH, HEIGHT = 300, 190                  # px of one panel
LEFT, RIGHT, TOP, BOTTOM = 46, 10, 26, 30  # plot-area margins: tick labels left and below, title above
MAIN, NULL, BASELINE = "#1f6fb4", "#8a8f98", "#d9480f"


@dataclass(frozen=True)
class Series:
    """Points of one metric by layer (sorted); NaN where there is no value or no CI."""

    layers: tuple[int, ...]
    values: tuple[float, ...]
    lows: tuple[float, ...]
    highs: tuple[float, ...]

    @classmethod
    def of(cls, rows: Sequence[Row]) -> Series:
        rows = sorted(rows, key=lambda r: r.layer)
        return cls(tuple(r.layer for r in rows), tuple(r.value for r in rows), tuple(r.ci_low for r in rows),
                   tuple(r.ci_high for r in rows))


@dataclass(frozen=True)
class Panel:
    """What one small multiple shows."""

    labeling: str
    metric: str
    main: Series
    null: Series | None = None
    baselines: tuple[tuple[str, float], ...] = ()   # (metric, value), drawn dashed


def family(metric: str) -> str:
    """The first word of a metric name: ``silhouette_umap`` → ``silhouette``."""
    return metric.split("_", 1)[0]


def panels(rows: Sequence[Row]) -> list[Panel]:
    """The panels of ``rows``, labelings and metrics in the order they first appear."""
    per_layer: dict[tuple[str, str], list[Row]] = defaultdict(list)
    baselines: dict[str, list[Row]] = defaultdict(list)
    for r in rows:
        if r.layer < 0:
            baselines[r.labeling].append(r)
        else:
            per_layer[(r.labeling, r.metric)].append(r)
    out = []
    for (labeling, metric), rs in per_layer.items():
        if metric.endswith("_null") and (labeling, metric[: -len("_null")]) in per_layer:
            continue  # drawn in its metric's panel
        null = per_layer.get((labeling, f"{metric}_null"))
        base = tuple((b.metric, b.value) for b in baselines[labeling]
                     if family(b.metric) == family(metric) and math.isfinite(b.value))
        out.append(Panel(labeling, metric, Series.of(rs), Series.of(null) if null else None, base))
    return out


def _finite_runs(s: Series, with_ci: bool) -> list[list[int]]:
    """Index runs of consecutive points whose value (and CI, if ``with_ci``) are finite."""
    runs: list[list[int]] = [[]]
    for i, v in enumerate(s.values):
        if math.isfinite(v) and (not with_ci or (math.isfinite(s.lows[i]) and math.isfinite(s.highs[i]))):
            runs[-1].append(i)
        elif runs[-1]:
            runs.append([])  # a gap closes the current run
    return [r for r in runs if r]


def _ys(s: Series | None) -> list[float]:
    return [] if s is None else [y for y in (*s.values, *s.lows, *s.highs) if math.isfinite(y)]


class _Scale:
    """Maps data (layer, value) to panel pixels; the plot area spans LEFT..WIDTH-RIGHT × TOP..HEIGHT-BOTTOM."""

    def __init__(self, x_lo: float, x_hi: float, y_lo: float, y_hi: float):
        if x_hi <= x_lo:
            x_lo, x_hi = x_lo - 1, x_hi + 1
        if y_hi <= y_lo:  # a flat curve: open a band around it
            pad = abs(y_lo) * 0.1 or 1.0
            y_lo, y_hi = y_lo - pad, y_hi + pad
        pad = (y_hi - y_lo) * 0.05
        self.x_lo, self.x_hi, self.y_lo, self.y_hi = x_lo, x_hi, y_lo - pad, y_hi + pad

    def x(self, layer: float) -> float:
        return LEFT + (layer - self.x_lo) / (self.x_hi - self.x_lo) * (WIDTH - LEFT - RIGHT)

    def y(self, value: float) -> float:
        return HEIGHT - BOTTOM - (value - self.y_lo) / (self.y_hi - self.y_lo) * (HEIGHT - TOP - BOTTOM)


def _f(v: float) -> str:
    return f"{v:.1f}"


def _line(s: Series, sc: _Scale, colour: str, width: float, dash: str = "") -> list[str]:
    """The value line (one path per finite run) and a dot per point."""
    out = []
    dash_attr = f' stroke-dasharray="{dash}"' if dash else ""
    for run in _finite_runs(s, with_ci=False):
        pts = " ".join(f"{'M' if k == 0 else 'L'}{_f(sc.x(s.layers[i]))},{_f(sc.y(s.values[i]))}"
                       for k, i in enumerate(run))
        out.append(f'<path d="{pts}" fill="none" stroke="{colour}" stroke-width="{width}"{dash_attr}/>')
        if not dash:
            out += [f'<circle cx="{_f(sc.x(s.layers[i]))}" cy="{_f(sc.y(s.values[i]))}" r="1.8" fill="{colour}"/>'
                    for i in run]
    return out


def _band(s: Series, sc: _Scale, colour: str, opacity: float) -> list[str]:
    """The CI band: one polygon per run of points with a finite CI (a single point: an error bar)."""
    out = []
    for run in _finite_runs(s, with_ci=True):
        if len(run) == 1:
            i = run[0]
            x = _f(sc.x(s.layers[i]))
            out.append(f'<line x1="{x}" x2="{x}" y1="{_f(sc.y(s.lows[i]))}" y2="{_f(sc.y(s.highs[i]))}" '
                       f'stroke="{colour}" stroke-width="2" stroke-opacity="{opacity * 2}"/>')
            continue
        upper = [f"{_f(sc.x(s.layers[i]))},{_f(sc.y(s.highs[i]))}" for i in run]
        lower = [f"{_f(sc.x(s.layers[i]))},{_f(sc.y(s.lows[i]))}" for i in reversed(run)]
        out.append(f'<polygon points="{" ".join(upper + lower)}" fill="{colour}" fill-opacity="{opacity}" stroke="none"/>')
    return out


def _tick(v: float) -> str:
    return "0" if v == 0 else f"{v:.3g}"


def _axes(sc: _Scale) -> list[str]:
    """Frame, grid lines and tick labels."""
    x0, x1, y0, y1 = LEFT, WIDTH - RIGHT, TOP, HEIGHT - BOTTOM
    out = [f'<rect x="{x0}" y="{y0}" width="{x1 - x0}" height="{y1 - y0}" fill="none" stroke="#c5ccd6"/>']
    for t in MaxNLocator(nbins=4).tick_values(sc.y_lo, sc.y_hi):
        if sc.y_lo <= t <= sc.y_hi:
            y = _f(sc.y(t))
            out.append(f'<line x1="{x0}" x2="{x1}" y1="{y}" y2="{y}" stroke="#e6e9ee"/>')
            out.append(f'<text x="{x0 - 4}" y="{y}" text-anchor="end" dominant-baseline="middle">{_tick(t)}</text>')
    for t in MaxNLocator(nbins=6, integer=True).tick_values(sc.x_lo, sc.x_hi):
        if sc.x_lo <= t <= sc.x_hi:
            x = _f(sc.x(t))
            out.append(f'<line x1="{x}" x2="{x}" y1="{y1}" y2="{y1 + 3}" stroke="#8a8f98"/>')
            out.append(f'<text x="{x}" y="{y1 + 13}" text-anchor="middle">{int(t)}</text>')
    out.append(f'<text x="{(x0 + x1) / 2:.1f}" y="{HEIGHT - 3}" text-anchor="middle" fill="#5b6472">layer</text>')
    return out


def panel_svg(p: Panel) -> str:
    """One panel as a standalone inline ``<svg>`` (WIDTH × HEIGHT px)."""
    xs = [*p.main.layers, *(p.null.layers if p.null else ())]
    ys = _ys(p.main) + _ys(p.null) + [v for _, v in p.baselines]
    label = f"{p.labeling} · {p.metric}"
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{HEIGHT}" '
             f'viewBox="0 0 {WIDTH} {HEIGHT}" role="img" aria-label="{text(label)}" '
             f'font-family="system-ui,sans-serif" font-size="10" fill="#1d2430">',
             f"<title>{text(label)}</title>",
             f'<rect width="{WIDTH}" height="{HEIGHT}" fill="#fff"/>',
             f'<text x="{LEFT}" y="15" font-size="12" font-weight="600">{text(p.metric)}</text>']
    if not ys:
        sc = _Scale(min(xs), max(xs), 0.0, 1.0)
        parts += _axes(sc)
        parts.append(f'<text x="{WIDTH / 2:.0f}" y="{HEIGHT / 2:.0f}" text-anchor="middle" fill="#5b6472">'
                     f"no finite values</text>")
        return "".join(parts) + "</svg>"
    sc = _Scale(min(xs), max(xs), min(ys), max(ys))
    parts += _axes(sc)
    if p.null:
        parts += _band(p.null, sc, NULL, 0.22) + _line(p.null, sc, NULL, 1.2, dash="2 2")
    for name, v in p.baselines:
        y = _f(sc.y(v))
        parts.append(f'<line x1="{LEFT}" x2="{WIDTH - RIGHT}" y1="{y}" y2="{y}" stroke="{BASELINE}" '
                     f'stroke-width="1.2" stroke-dasharray="5 3"><title>{text(name)} = {v:.4g}</title></line>')
        parts.append(f'<text x="{WIDTH - RIGHT - 2}" y="{_f(sc.y(v) - 3)}" text-anchor="end" font-size="9" '
                     f'fill="{BASELINE}">{text(name)}</text>')
    parts += _band(p.main, sc, MAIN, 0.2) + _line(p.main, sc, MAIN, 1.6)
    return "".join(parts) + "</svg>"


LEGEND = (f'<p class="legend"><i style="border-top:2px solid {MAIN}"></i>value, shaded 95 % CI'
          f'<i style="border-top:2px dotted {NULL}"></i>shuffled null (grey band: its 95 % range)'
          f'<i style="border-top:2px dashed {BASELINE}"></i>layer-independent baseline (layer −1)</p>')
