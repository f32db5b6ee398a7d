"""UMAP geometry: how well each layer's residual stream separates (or orders) a domain's labels.

Per read-out layer (methods.md 1.1; Marinescu et al., ICLR 2026):

Categorical and ordinal labelings (symptoms by organ system, drugs by mechanism and by specialty,
disease by chapter, progression stage within each disease):
- ``silhouette_umap``: silhouette of the true labels in a 30-D UMAP embedding (the paper's metric),
  with a bootstrap 95 % CI;
- ``silhouette_raw``: the same in raw activation space with cosine distance — a check that UMAP did
  not invent or erase the structure;
- ``silhouette_umap_null`` / ``silhouette_raw_null``: the score with shuffled labels (mean and 95 %
  band of the permutation distribution);
- ``silhouette_surface`` (layer -1): the silhouette of character n-gram TF-IDF features of the term's
  own text, on unique terms (one row per item, not one per prompt: copies of a term would inflate
  it). Drug stems (-olol, -pril, -statin) separate mechanism classes before any layer; a layer's
  score means something only read against what spelling alone gives.

Numeric labelings (age), pooled and per class of each ``numeric_split`` label (gender):
- ``anisotropy``: mean local anisotropy A_i = 1 − λ2/λ1 over each point's k nearest neighbours in the
  2-D UMAP embedding, with ``anisotropy_null`` (layer -1) for an isotropic Gaussian of the same size —
  about 0.37 at k = 20, not 0;
- ``r2_raw`` / ``r2_umap``: cross-validated ridge R² from the activations (or the 30-D embedding) to
  the value, with folds grouped by value so one age never sits in both train and test, and
  ``r2_raw_null`` with shuffled values;
- ``discontinuity`` (age 17 → 18): the step between the 17 and 18 centroids over the median adjacent
  step (≈ 1 on a smooth ramp), and ``discontinuity_rank``, the fraction of other steps it exceeds.

For the findings (medinterp/maps/findings.py), also per layer:
- ``effective_rank`` (labeling ``all``): exp-entropy of the singular values of all points (collapse);
- ``circular_corr``, ``circular_r2_gain``, ``closure_ratio`` (+ ``*_null``) on ``stage/<disease>``;
- ``discontinuity_diff`` on ``age/female-male``: the female step minus the male step, with a CI;
- ``silhouette_{umap,raw}_diff`` on ``specialty-mechanism`` (``contrasts``): the paired per-point
  silhouette difference of two labelings of the same points.

Before measuring, each template's mean activation is subtracted (``center="template"``, default):
otherwise prompts that end in the same words cluster by template and every metric measures the
template. ``center="none"`` keeps the raw activations.

As a method (medinterp/methods/base.py), its model units capture the residual stream into the activation cache
and its local units measure one read-out layer each, in ``n_jobs`` worker processes (medinterp/workers.py); the
driver checkpoints every unit, so a killed run restarts where it stopped.
"""
from __future__ import annotations

import contextlib
import dataclasses
import functools
import logging
import math
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
from sklearn.metrics import pairwise_distances, silhouette_samples
from tqdm.auto import tqdm

from medinterp.capture.cache import ActivationCapture
from medinterp.capture.images import image_readout
from medinterp.errors import MedinterpError, unknown_choice
from medinterp.methods.base import PERSISTED, Measurement, Method, MethodResult, register_method
from medinterp.methods.points import Points
from medinterp.methods.tokens import MODALITIES as TOKEN_MODALITIES, check_token_setting, token_type
from medinterp.metrics import (
    Estimate,
    discontinuity_with_ci,
    explained_by_spelling,
    local_anisotropy,
    local_anisotropy_null,
    mean_with_ci,
    r2_with_ci,
    ridge_r2_cv,
    ridge_r2_with_null,
    shuffled_silhouette_null,
    silhouette_with_ci,
    step_rank,
    surface_features,
)
from medinterp.metrics.circularity import CIRCULARITY_METRICS, circularity_with_ci
from medinterp.metrics.discontinuity import discontinuity_diff_with_ci, discontinuity_replicates
from medinterp.metrics import device as device_metrics
from medinterp.metrics.rank import effective_rank_with_ci
from medinterp import workers
from medinterp.workers import imap

if TYPE_CHECKING:
    from medinterp.cell import Cell
    from medinterp.models import ModelHandle

log = logging.getLogger(__name__)


@dataclass
class UmapWork:
    """One UMAP cell: capture units (the activation cache's batches), then one local unit per read-out layer."""

    capture: ActivationCapture
    points: Points
    labelings: list[str]
    n_layers: int
    tokens: str | None = None  # image prompt sets: the token type read (medinterp/methods/tokens.py); None: text
    acts: list[np.ndarray] | None = None  # rank 0, after the capture: one array per template

    @property
    def n_units(self) -> int:
        return len(self.capture.units)

    @property
    def n_local_units(self) -> int:
        return self.n_layers + 1

    def layer(self, layer: int) -> np.ndarray:
        """Read-out ``layer`` of every point (N, D), template-major."""
        return np.concatenate([np.asarray(a[layer]) for a in self.acts], axis=0)


def _constant(value: float, n: int) -> Estimate:
    return Estimate(float(value), float("nan"), float("nan"), int(n))


@register_method("umap")
@dataclass(frozen=True)
class UmapGeometry(Method):
    """Per-layer UMAP geometry. Settings are fixed at construction. As a :class:`Method`, its model units capture
    the residual stream into the activation cache and its local units measure one read-out layer each;
    :meth:`run` measures given activations."""


    n_neighbors: int = 15
    min_dist: float = 0.1
    metric: str = "euclidean"
    n_components: int = 30  # embedding for metrics; plots use a separate 2-D fit
    raw_metric: str = "cosine"
    seed: int = 0
    n_boot: int = 200
    n_perm: int = 20
    k_anisotropy: int = 20
    numeric_split: tuple[str, ...] = ("gender",)
    discontinuity_at: float | None = 17.0
    surface_control: bool = True
    contrasts: tuple[tuple[str, str], ...] = (("specialty", "mechanism"),)  # paired silhouette differences a − b
    center: str = "template"  # "template": subtract each template's mean activation per layer; "none"
    n_jobs: int = 1
    min_distinct_rows: int = 16  # a layer with fewer distinct rows (or fewer than N) is degenerate: NaN + note
    spelling_fraction: float = 0.5  # flag a silhouette whose spelling control reaches this fraction of it
    tokens: str | None = None  # image prompt sets: image | text | all (None: all); text sets: None, text or all
    modalities = TOKEN_MODALITIES  # text and image prompt sets (an image set is read by token type)

    def __post_init__(self) -> None:
        check_token_setting("umap", self.tokens)
        for name, low in (("n_neighbors", 2), ("n_components", 2), ("n_boot", 1), ("n_perm", 1), ("k_anisotropy", 2),
                          ("min_distinct_rows", 1)):
            if int(getattr(self, name)) < low:
                raise MedinterpError(f"umap method: {name} must be >= {low}; got {getattr(self, name)}")
        if not 0.0 < self.spelling_fraction <= 1.0:
            raise MedinterpError(f"umap method: spelling_fraction must be in (0, 1]; got {self.spelling_fraction}")
        if not 0.0 <= self.min_dist <= 1.0:
            raise MedinterpError(f"umap method: min_dist must be in [0, 1]; got {self.min_dist}")
        if self.center not in ("template", "none"):
            raise unknown_choice("center for the umap method:", self.center, ("template", "none"))
        object.__setattr__(self, "numeric_split", tuple(self.numeric_split))
        contrasts = tuple(tuple(pair) for pair in self.contrasts)
        if any(len(pair) != 2 for pair in contrasts):
            raise MedinterpError(f"umap method: contrasts must be pairs of labelings [a, b]; got {self.contrasts}")
        object.__setattr__(self, "contrasts", contrasts)

    # -- the Method seam (medinterp/methods/base.py) -------------------------------------------------------
    def prepare(self, cell: Cell) -> UmapWork:
        h, ps = cell.handle, cell.prompt_set
        tokens = token_type("umap", self.tokens, ps)
        readout = cell.reduction if tokens is None else image_readout(tokens)  # an image set: pooled by token type
        rank0 = cell.strategy.is_rank_zero
        cached = ActivationCapture.cached(h, ps, cell.templates, readout, cell.cache_dir) if rank0 else None
        capture = ActivationCapture(h, ps, cell.templates, readout, cell.batch_size, cell.batch_tokens,
                                    cell.cache_dir, cell.strategy.broadcast(cached))
        points = cell.points
        return UmapWork(capture, points, self.labelings(points, cell.labelings), h.n_layers, tokens)

    def run_unit(self, handle: ModelHandle, work: UmapWork, i: int) -> np.ndarray:
        return work.capture.run(i)

    def open(self, handle: ModelHandle, work: UmapWork) -> None:
        if self.n_jobs > 1:
            workers.start(self.n_jobs, compile_umap)  # the workers compile UMAP while the model captures
        work.capture.open()

    def persisted(self, handle: ModelHandle, work: UmapWork) -> set[int]:
        return work.capture.persisted()  # batches a partial cache entry of an earlier run holds

    def sink(self, handle: ModelHandle, work: UmapWork, i: int, result: np.ndarray) -> Any:
        # into the cache entry, the batch's one copy (PERSISTED); without a cache the driver checkpoints it
        return PERSISTED if work.capture.sink(i, result) else None

    def close(self, handle: ModelHandle, work: UmapWork, ok: bool) -> None:
        work.capture.close(ok)
        if ok:
            work.acts = work.capture.activations()
            log.info("%s: %d points x %d read-outs x d=%d; measuring layers", handle.name, len(work.points),
                     work.n_layers + 1, handle.d_model)

    def local_unit(self, handle: ModelHandle, work: UmapWork, j: int) -> Callable[[], Any]:
        # kNN, distances and silhouettes on the model's GPU, if it has one (medinterp/metrics/device.py)
        device = str(handle.device) if getattr(handle.device, "type", None) == "cuda" else None
        return functools.partial(self.measure_layer, j, work.layer(j), work.points, work.labelings, device)

    def local_warm_up(self) -> Callable[[], None]:
        return compile_umap

    def finish(self, handle: ModelHandle, work: UmapWork, results: Sequence[Any]) -> MethodResult:
        # an image set has no spelling: no surface-form control
        result = self.combine(self.baselines(work.points, work.labelings, surface=work.tokens is None),
                              list(results[work.n_units:]))
        if work.tokens is not None:
            result.tokens = work.tokens
            result.artifacts["summary"]["tokens"] = work.tokens
        return result

    # -- measuring given activations ---------------------------------------------------------------------
    def run(self, acts: np.ndarray, points: Points, labelings: Sequence[str] | None = None) -> MethodResult:
        """Measure every layer of ``acts`` (n_layers + 1, N, D) for the chosen ``labelings`` of ``points``."""
        if acts.ndim != 3 or acts.shape[1] != len(points):
            raise MedinterpError(f"activations of shape {acts.shape} do not match {len(points)} points")
        labelings = self.labelings(points, labelings)
        done = imap(self.measure_layer, ((layer, acts[layer], points, labelings) for layer in range(acts.shape[0])),
                    self.n_jobs, compile_umap)
        per_layer = list(tqdm(done, total=acts.shape[0], desc="umap layers", unit="layer", leave=False))
        return self.combine(self.baselines(points, labelings), per_layer)

    def measure_layer(self, layer: int, X: np.ndarray, points: Points, labelings: Sequence[str],
                      device: str | None = None) -> tuple[list[Measurement], np.ndarray]:
        """Every metric of one layer's raw activations ``X`` (N, D) (template-centred here, :meth:`centred`),
        and its 2-D embedding for the plots. ``device`` (a torch device, e.g. ``"cuda:0"``): the exact kNN graph,
        the distance matrices and the silhouettes are computed there (medinterp/metrics/device.py; equal to the
        scikit-learn path to float round-off, but near-tied neighbours may order differently); None: scikit-learn."""
        return _measure_layer(self, layer, self.centred(X, points), points, labelings, device)

    @staticmethod
    def labelings(points: Points, labelings: Sequence[str] | None) -> list[str]:
        """The labelings to measure: ``labelings`` (all of ``points``' when None), each checked to exist."""
        labelings = list(points.labels) if labelings is None else list(labelings)
        unknown = [name for name in labelings if name not in points.labels]
        if unknown:
            raise MedinterpError(f"unknown labeling(s) {unknown}; valid: {', '.join(points.labels)}")
        return labelings

    def combine(self, baselines: list[Measurement], per_layer: Sequence[tuple[list[Measurement], np.ndarray]]
                ) -> MethodResult:
        """The result from the baselines and each layer's (measurements, 2-D embedding), in layer order."""
        measurements = flag_spelling(baselines + [m for ms, _ in per_layer for m in ms], self.spelling_fraction)
        summary = {"spelling_fraction": self.spelling_fraction, "explained_by_spelling": spelling_flags(measurements)}
        return MethodResult(measurements, artifacts={"embedding_2d": [emb for _, emb in per_layer], "summary": summary})

    # -- pieces ----------------------------------------------------------------------------------------
    def baselines(self, points: Points, labelings: Sequence[str], surface: bool = True) -> list[Measurement]:
        """Layer-independent rows: the spelling-only silhouette (``surface`` and ``surface_control``; not for image
        sets, whose terms have no spelling) and the anisotropy null.

        The spelling control is scored on unique terms, one row per item: the same term under every
        template is the same text, and its copies (at distance 0, in the same class) would shrink a(i)
        and inflate the silhouette with the number of templates.
        """
        out = []
        first = np.zeros(len(points), bool)  # each item's first point (its term, once)
        first[np.unique(points.item_ids, return_index=True)[1]] = True
        spelling = self.surface_control and surface
        features = surface_features([t for t, f in zip(points.terms, first) if f]) if spelling else None
        index = np.cumsum(first) - 1  # point -> its row in features (valid where ``first``)
        for name in labelings:
            if points.kinds[name] == "numeric":
                for sub, mask in numeric_subsets(points, name, self.numeric_split):
                    null = local_anisotropy_null(int(mask.sum()), k=self.k_anisotropy, seed=self.seed)
                    out.append(Measurement(sub, "anisotropy_null", -1, _constant(null, mask.sum())))
            elif features is not None:
                for sub, mask, labels in class_subsets(points, name):
                    keep = mask & first
                    unique_labels = points.labels[name][keep]
                    n, n_classes = int(keep.sum()), len(set(unique_labels.tolist()))
                    if 2 <= n_classes <= n - 1:
                        est = silhouette_with_ci(features[index[keep]], unique_labels, "cosine", self.n_boot, self.seed)
                        out.append(Measurement(sub, "silhouette_surface", -1, est))
                    else:  # e.g. one item per stage: the silhouette of unique terms is undefined
                        out.append(Measurement(sub, "silhouette_surface", -1, _constant(math.nan, n),
                                               f"undefined: {n} unique terms in {n_classes} classes"))
        return out

    def centred(self, X: np.ndarray, points: Points) -> np.ndarray:
        """One layer's activations (N, D) as float32, template-centred if ``center == "template"``.

        At the last token, prompts that share a template share their final words, and the template
        dominates the geometry (UMAP shows one cluster per template). Subtracting each template's mean
        removes that offset and leaves what varies with the item.
        """
        X = np.array(X, dtype=np.float32)
        if self.center == "template":
            for t in np.unique(points.template_ids):
                rows = points.template_ids == t
                X[rows] -= X[rows].mean(0)
        return X

    def neighbours(self, X: np.ndarray, device: str | None = None) -> tuple[np.ndarray, np.ndarray] | None:
        """The exact k-nearest-neighbour graph UMAP would compute itself, vectorised; None where UMAP should.

        Below 4096 points UMAP computes all pairwise distances exactly, through scikit-learn with its
        own numba metric as a Python callable: one Python call per pair (~1.5 s per fit at 800 points).
        scikit-learn's vectorised metric gives the same distances (to float round-off) in milliseconds;
        the neighbours are then the k smallest per row, as UMAP's ``fast_knn_indices`` picks them, and the 30-D and 2-D
        fits share them (``precomputed_knn``), so the embeddings are UMAP's own. Larger sets and metrics
        scikit-learn does not know keep UMAP's path (nearest-neighbour descent above 4096 points).
        Returns ``(indices, distances)``, each (N, k), k = the fits' ``n_neighbors``. ``device``: the same graph from
        :func:`medinterp.metrics.device.neighbours` on that torch device (euclidean and cosine only).
        """
        from sklearn.metrics.pairwise import PAIRWISE_DISTANCE_FUNCTIONS

        if len(X) >= 4096 or self.metric not in PAIRWISE_DISTANCE_FUNCTIONS:
            return None
        k = min(self.n_neighbors, len(X) - 1)
        if device is not None and self.metric in device_metrics.METRICS:
            import torch

            indices, distances = device_metrics.neighbours(torch.as_tensor(X, device=device), k, self.metric)
            return indices.cpu().numpy(), distances.cpu().numpy()
        from sklearn.metrics import pairwise_distances

        D = pairwise_distances(X.astype(np.float64), metric=self.metric)
        np.fill_diagonal(D, 0.0)
        np.maximum(D, 0.0, out=D)
        indices = np.argsort(D, axis=1, kind="stable")[:, :k]  # UMAP's fast_knn_indices, without its JIT compile
        return indices, np.take_along_axis(D, indices, axis=1)

    def umap(self, X: np.ndarray, n_components: int, knn: tuple[np.ndarray, np.ndarray] | None = None) -> np.ndarray:
        """A seeded UMAP embedding of ``X`` (single-threaded, seeded ARPACK: a function of its inputs).

        ``knn``: ``X``'s nearest neighbours under ``self.metric`` (:meth:`neighbours`), if known.
        """
        import umap

        n_neighbors = min(self.n_neighbors, len(X) - 1)
        extra = {} if knn is None else {"precomputed_knn": (knn[0].copy(), knn[1].copy())}  # UMAP edits them
        reducer = umap.UMAP(n_components=min(n_components, len(X) - 2), n_neighbors=n_neighbors,
                            min_dist=self.min_dist, metric=self.metric, random_state=self.seed, n_jobs=1, **extra)
        with seeded_arpack(self.seed):
            return reducer.fit_transform(X).astype(np.float32)


@contextlib.contextmanager
def seeded_arpack(seed: int) -> Iterator[None]:
    """Within the block, ``scipy.sparse.linalg.eigsh`` restarts ARPACK from vectors drawn with ``seed``.

    UMAP's spectral initialisation calls ``eigsh`` with a fixed start vector but no ``rng``; when the
    Lanczos iteration breaks down, ARPACK restarts from a vector that scipy draws from OS entropy. It does
    on a connected component of (near-)duplicate points (a clique, one repeated eigenvalue): read-out 1 of
    tiny_gemma3 under ``reduction=last`` holds 426 distinct rows in 800 and two such components, and its
    UMAP metrics differed between runs. Where ARPACK never restarts the seed is unused and nothing changes.
    UMAP looks ``eigsh`` up on the module at each call, so the block swaps that attribute (fits run on one
    thread per process).
    """
    import scipy.sparse.linalg as sparse_linalg

    eigsh = sparse_linalg.eigsh
    sparse_linalg.eigsh = functools.partial(eigsh, rng=seed)
    try:
        yield
    finally:
        sparse_linalg.eigsh = eigsh


def compile_umap() -> None:
    """Compile UMAP's numba code in this process (a worker's warm-up): one small fit of each kind
    :func:`_measure_layer` makes (exact kNN, 30-D and 2-D); the first fit in a process compiles for seconds."""
    X = np.random.default_rng(0).normal(size=(64, 8)).astype(np.float32)
    cfg = UmapGeometry()
    knn = cfg.neighbours(X)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        cfg.umap(X, cfg.n_components, knn)
        cfg.umap(X, 2, knn)


SPELLING_FLAG = "explained_by_spelling"
FLAGGED_METRICS = ("silhouette_umap", "silhouette_raw")


def flag_spelling(measurements: Sequence[Measurement], fraction: float) -> list[Measurement]:
    """``measurements`` with the note ``explained_by_spelling: ...`` on every layer's silhouette (UMAP and
    raw) whose labeling's spelling control reaches ``fraction`` of it
    (:func:`medinterp.metrics.surface.explained_by_spelling` says exactly when)."""
    surface = {m.labeling: m.estimate.value for m in measurements if m.metric == "silhouette_surface"}
    out = []
    for m in measurements:
        c = surface.get(m.labeling, math.nan)
        if m.metric in FLAGGED_METRICS and m.layer >= 0 and explained_by_spelling(m.estimate.value, c, fraction):
            flag = f"{SPELLING_FLAG}: surface {c:.3f} >= {fraction:g} x {m.estimate.value:.3f}"
            m = dataclasses.replace(m, note=f"{m.note}; {flag}" if m.note else flag)
        out.append(m)
    return out


def spelling_flags(measurements: Sequence[Measurement]) -> dict[str, dict[str, list[int]]]:
    """{labeling: {metric: layers}} of the silhouettes flagged by :func:`flag_spelling` (for summary.json)."""
    out: dict[str, dict[str, list[int]]] = {}
    for m in measurements:
        if SPELLING_FLAG in m.note:
            out.setdefault(m.labeling, {}).setdefault(m.metric, []).append(m.layer)
    return out


def class_subsets(points: Points, name: str) -> Iterator[tuple[str, np.ndarray, np.ndarray]]:
    """(labeling name, point mask, labels) to score: the whole set, or one subset per group of an ordinal.

    A nested ordinal labeling (stage within disease) is scored within each group (``stage/<disease>``),
    since stage 2 of one disease and stage 2 of another are not one class.
    """
    labels = points.labels[name]
    group = points.group_by.get(name)
    if points.kinds[name] == "ordinal" and group:
        for g in sorted(set(points.labels[group])):
            mask = points.labels[group] == g
            n_classes = len(set(labels[mask]))
            if 2 <= n_classes <= mask.sum() - 1:  # where a silhouette is defined
                yield f"{name}/{g}", mask, labels[mask]
            else:
                log.warning("skipping %s/%s: %d points in %d classes (use more templates)", name, g, mask.sum(), n_classes)
    else:
        yield name, np.ones(len(points), bool), labels


def numeric_subsets(points: Points, name: str, split: Sequence[str]) -> Iterator[tuple[str, np.ndarray]]:
    """(labeling name, mask): pooled, then one per class of each ``split`` label the domain has."""
    yield f"{name}/pooled", np.ones(len(points), bool)
    for label in split:
        if label in points.labels:
            for cls in sorted(set(points.labels[label])):
                yield f"{name}/{cls}", points.labels[label] == cls


def distinct_rows(X: np.ndarray) -> int:
    """How many different rows ``X`` (N, D) has (exact comparison of the values)."""
    return len(np.unique(np.ascontiguousarray(X), axis=0))


def _measure_layer(cfg: UmapGeometry, layer: int, X: np.ndarray, points: Points, labelings: Sequence[str],
                   device: str | None = None) -> tuple[list[Measurement], np.ndarray]:
    """All metrics of one layer (run in a worker process).

    A *degenerate* layer, with fewer than ``min(cfg.min_distinct_rows, N)`` distinct rows (read-out 0
    under ``reduction=last``: every prompt of a template ends in the same token, so after template
    centring the layer holds one row per template, or one in all), has no geometry to measure: UMAP's
    neighbour graph is all ties and its fit is arbitrary (run-to-run drift), and a silhouette, rank or
    regression of a handful of repeated points measures the repetition. Every metric of such a layer
    is NaN, without a CI, with the note ``degenerate: <n> distinct rows``; nothing is fitted, and its
    2-D embedding (for the plots) is all points at the origin.
    """
    warnings.filterwarnings("ignore", message=".*n_jobs value.*overridden.*")
    # Expected on clustered data (e.g. one item under several templates); the embedding is still valid.
    warnings.filterwarnings("ignore", message="Graph is not fully connected")
    warnings.filterwarnings("ignore", message=r"precomputed_knn\[2\] \(knn_search_index\) is not an NNDescent")
    n_distinct = distinct_rows(X)
    degenerate = n_distinct < min(cfg.min_distinct_rows, len(X))
    note = f"degenerate: {n_distinct} distinct row{'' if n_distinct == 1 else 's'}" if degenerate else ""
    if degenerate:
        emb = emb2 = np.zeros((len(X), 2), np.float32)
    else:
        knn = cfg.neighbours(X, device)
        emb = cfg.umap(X, cfg.n_components, knn)
        emb2 = cfg.umap(X, 2, knn)
    out: list[Measurement] = []

    def add(labeling: str, metric: str, compute: Callable[[], Estimate], n: int) -> None:
        """One row; on a degenerate layer ``compute`` is not called and the value is NaN with the note."""
        est = Estimate(math.nan, math.nan, math.nan, int(n)) if degenerate else compute()
        out.append(Measurement(labeling, metric, layer, est, note))

    add("all", "effective_rank", lambda: effective_rank_with_ci(X, n_boot=min(cfg.n_boot, 30), seed=cfg.seed), len(X))
    # Distances once per layer; every labeling and subset indexes into them.
    spaces: dict[str, np.ndarray | None] = {"umap": None, "raw": None}
    samples = None if device is None else functools.partial(device_metrics.silhouette_np, device=device)
    if device is not None and not degenerate:
        spaces = {"umap": device_metrics.distances_np(emb, "euclidean", device),
                  "raw": device_metrics.distances_np(X, cfg.raw_metric, device)}
    elif not degenerate:
        d_raw = pairwise_distances(X, metric=cfg.raw_metric)
        np.fill_diagonal(d_raw, 0.0)  # cosine distances carry ~1e-7 rounding on the diagonal
        spaces = {"umap": pairwise_distances(emb), "raw": d_raw}
    per_sample: dict[tuple[str, str], np.ndarray | None] = {}  # (labeling, space) -> s(i), for contrasts
    for name in labelings:
        if points.kinds[name] == "numeric":
            y = points.labels[name].astype(float)
            drawn: dict[str, np.ndarray] = {}  # subset -> its discontinuity replicates (seed), reused by the difference
            for sub, mask in numeric_subsets(points, name, cfg.numeric_split):
                _numeric_metrics(cfg, X[mask], emb[mask], emb2[mask], y[mask],
                                 lambda m, f, n, s=sub: add(s, m, f, n), degenerate, drawn, sub)
            _gender_step_difference(cfg, X, y, points, name, add, drawn)
            continue
        for sub, mask, labels in class_subsets(points, name):
            for space, D in spaces.items():
                Dm = None if D is None else D[np.ix_(mask, mask)]
                add(sub, f"silhouette_{space}",
                    lambda Dm=Dm: silhouette_with_ci(Dm, labels, "precomputed", cfg.n_boot, cfg.seed, samples), mask.sum())
                add(sub, f"silhouette_{space}_null",
                    lambda Dm=Dm: shuffled_silhouette_null(Dm, labels, "precomputed", cfg.n_perm, cfg.seed, samples),
                    mask.sum())
                if sub == name:
                    per_sample[(name, space)] = (None if Dm is None else silhouette_samples(Dm, labels, metric="precomputed")
                                                 if samples is None else samples(Dm, labels))
            if points.kinds[name] == "ordinal" and sub != name and len(set(labels)) >= 3:
                found = {} if degenerate else circularity_with_ci(
                    X[mask], labels.astype(float), n_boot=cfg.n_boot // 2, n_perm=cfg.n_perm, seed=cfg.seed)
                for metric in CIRCULARITY_METRICS:
                    est, null = found.get(metric, (None, None))
                    add(sub, metric, lambda est=est: est, mask.sum())
                    add(sub, f"{metric}_null", lambda null=null: null, mask.sum())
    for a, b in cfg.contrasts:  # paired: the same points under two labelings
        for space in spaces:
            if (a, space) in per_sample and (b, space) in per_sample:
                sa, sb = per_sample[(a, space)], per_sample[(b, space)]
                add(f"{a}-{b}", f"silhouette_{space}_diff",
                    lambda sa=sa, sb=sb: mean_with_ci(sa - sb, cfg.n_boot, seed=cfg.seed), len(X))
    return out, emb2


def _gender_step_difference(cfg: UmapGeometry, X: np.ndarray, y: np.ndarray, points: Points, name: str, add,
                            drawn: dict[str, np.ndarray]) -> None:
    """The 17→18 step of one class minus the other's, for each two-class split label (female − male).

    ``drawn``: replicates :func:`_numeric_metrics` already drew per subset (``<name>/<class>``, same seed), reused
    for the first class instead of drawn again (the same numbers).
    """
    at = cfg.discontinuity_at
    for label in cfg.numeric_split:
        classes = sorted(set(points.labels.get(label, [])))
        if len(classes) != 2 or at is None:
            continue
        ma, mb = (points.labels[label] == c for c in classes)
        if at in y[ma] and at in y[mb] and np.any(y[ma] > at) and np.any(y[mb] > at):
            add(f"{name}/{classes[0]}-{classes[1]}", "discontinuity_diff",
                lambda: discontinuity_diff_with_ci(X[ma], y[ma], X[mb], y[mb], at=at, n_boot=cfg.n_boot, seed=cfg.seed,
                                                   replicates_a=drawn.get(f"{name}/{classes[0]}")),
                len(y))


def _numeric_metrics(cfg: UmapGeometry, X: np.ndarray, emb: np.ndarray, emb2: np.ndarray, y: np.ndarray, add,
                     degenerate: bool = False, drawn: dict[str, np.ndarray] | None = None, sub: str = "") -> None:
    """Anisotropy, ridge R² and the discontinuity for one numeric labeling subset ``sub``.

    ``add(metric, compute, n)`` calls ``compute`` unless the layer is degenerate (then nothing is fitted).
    ``drawn[sub]`` receives the subset's discontinuity replicates (for :func:`_gender_step_difference`).
    """
    n = len(y)
    k = min(cfg.k_anisotropy, n - 1)
    add("anisotropy", lambda: mean_with_ci(local_anisotropy(emb2, k=k), cfg.n_boot, seed=cfg.seed), n)
    # one set of SVDs for the value and its null
    r2, pred, null = (None, None, None) if degenerate else ridge_r2_with_null(X, y, groups=y, n_perm=5, seed=cfg.seed)
    add("r2_raw", lambda: r2_with_ci(y, pred, cfg.n_boot, cfg.seed), n)
    add("r2_raw_null", lambda: null, n)
    add("r2_umap", lambda: r2_with_ci(y, ridge_r2_cv(emb, y, groups=y, seed=cfg.seed)[1], cfg.n_boot, cfg.seed), n)
    at = cfg.discontinuity_at
    values = np.unique(y)
    if at is not None and at in values and np.any(values > at):
        def discontinuity() -> Estimate:
            reps = discontinuity_replicates(X, y, at=at, n_boot=cfg.n_boot, seed=cfg.seed)
            if drawn is not None:
                drawn[sub] = reps
            return discontinuity_with_ci(X, y, at=at, n_boot=cfg.n_boot, seed=cfg.seed, replicates=reps)

        add("discontinuity", discontinuity, n)
        add("discontinuity_rank", lambda: _constant(step_rank(X, y, at=at), n), n)
