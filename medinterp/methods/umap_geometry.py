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
  own text. Drug stems (-olol, -pril, -statin) separate mechanism classes before any layer; a layer's
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

Layers are independent, so they run in parallel worker processes (``n_jobs``).
"""
from __future__ import annotations

import logging
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np
from joblib import Parallel, delayed
from sklearn.metrics import pairwise_distances
from tqdm.auto import tqdm

from medinterp.errors import MedinterpError
from medinterp.methods.base import Measurement, MethodResult, register_method
from medinterp.methods.points import Points
from medinterp.metrics import (
    Estimate,
    discontinuity_with_ci,
    local_anisotropy,
    local_anisotropy_null,
    mean_with_ci,
    r2_with_ci,
    ridge_r2_cv,
    shuffled_r2_null,
    shuffled_silhouette_null,
    silhouette_with_ci,
    step_rank,
    surface_features,
)

log = logging.getLogger(__name__)


def _constant(value: float, n: int) -> Estimate:
    return Estimate(float(value), float("nan"), float("nan"), int(n))


@register_method("umap")
@dataclass(frozen=True)
class UmapGeometry:
    """Per-layer UMAP geometry. Settings are fixed at construction; :meth:`run` measures."""

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
    n_jobs: int = 1

    def __post_init__(self) -> None:
        for name, low in (("n_neighbors", 2), ("n_components", 2), ("n_boot", 1), ("n_perm", 1), ("k_anisotropy", 2)):
            if int(getattr(self, name)) < low:
                raise MedinterpError(f"umap method: {name} must be >= {low}; got {getattr(self, name)}")
        if not 0.0 <= self.min_dist <= 1.0:
            raise MedinterpError(f"umap method: min_dist must be in [0, 1]; got {self.min_dist}")
        object.__setattr__(self, "numeric_split", tuple(self.numeric_split))

    def run(self, acts: np.ndarray, points: Points, labelings: Sequence[str] | None = None) -> MethodResult:
        """Measure every layer of ``acts`` (n_layers + 1, N, D) for the chosen ``labelings`` of ``points``."""
        if acts.ndim != 3 or acts.shape[1] != len(points):
            raise MedinterpError(f"activations of shape {acts.shape} do not match {len(points)} points")
        labelings = list(points.labels) if labelings is None else list(labelings)
        unknown = [name for name in labelings if name not in points.labels]
        if unknown:
            raise MedinterpError(f"unknown labeling(s) {unknown}; valid: {', '.join(points.labels)}")
        base = self._baselines(points, labelings)
        jobs = (delayed(_measure_layer)(self, layer, np.asarray(acts[layer], dtype=np.float32), points, labelings)
                for layer in range(acts.shape[0]))
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*n_jobs value.*overridden.*")
            results = list(tqdm(Parallel(n_jobs=self.n_jobs, return_as="generator")(jobs), total=acts.shape[0],
                                desc="umap layers", unit="layer", leave=False))
        measurements = base + [m for ms, _ in results for m in ms]
        return MethodResult(measurements, artifacts={"embedding_2d": [emb for _, emb in results]})

    # -- pieces ----------------------------------------------------------------------------------------
    def _baselines(self, points: Points, labelings: Sequence[str]) -> list[Measurement]:
        """Layer-independent rows: the spelling-only silhouette and the anisotropy null."""
        out = []
        features = surface_features(points.terms) if self.surface_control else None
        for name in labelings:
            if points.kinds[name] == "numeric":
                for sub, mask in numeric_subsets(points, name, self.numeric_split):
                    null = local_anisotropy_null(int(mask.sum()), k=self.k_anisotropy, seed=self.seed)
                    out.append(Measurement(sub, "anisotropy_null", -1, _constant(null, mask.sum())))
            elif features is not None:
                for sub, mask, labels in class_subsets(points, name):
                    est = silhouette_with_ci(features[mask], labels, "cosine", self.n_boot, self.seed)
                    out.append(Measurement(sub, "silhouette_surface", -1, est))
        return out

    def umap(self, X: np.ndarray, n_components: int) -> np.ndarray:
        """A seeded UMAP embedding of ``X`` (single-threaded, hence reproducible)."""
        import umap

        n_neighbors = min(self.n_neighbors, len(X) - 1)
        reducer = umap.UMAP(n_components=min(n_components, len(X) - 2), n_neighbors=n_neighbors,
                            min_dist=self.min_dist, metric=self.metric, random_state=self.seed, n_jobs=1)
        return reducer.fit_transform(X).astype(np.float32)


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


def _measure_layer(cfg: UmapGeometry, layer: int, X: np.ndarray, points: Points,
                   labelings: Sequence[str]) -> tuple[list[Measurement], np.ndarray]:
    """All metrics of one layer (run in a worker process)."""
    warnings.filterwarnings("ignore", message=".*n_jobs value.*overridden.*")
    emb = cfg.umap(X, cfg.n_components)
    emb2 = cfg.umap(X, 2)
    out: list[Measurement] = []

    def add(labeling: str, metric: str, est: Estimate) -> None:
        out.append(Measurement(labeling, metric, layer, est))

    for name in labelings:
        if points.kinds[name] == "numeric":
            y = points.labels[name].astype(float)
            for sub, mask in numeric_subsets(points, name, cfg.numeric_split):
                _numeric_metrics(cfg, X[mask], emb[mask], emb2[mask], y[mask], lambda m, e, s=sub: add(s, m, e))
            continue
        for sub, mask, labels in class_subsets(points, name):
            d_umap = pairwise_distances(emb[mask])
            d_raw = pairwise_distances(X[mask], metric=cfg.raw_metric)
            np.fill_diagonal(d_raw, 0.0)  # cosine distances carry ~1e-7 rounding on the diagonal
            for space, D in (("umap", d_umap), ("raw", d_raw)):
                add(sub, f"silhouette_{space}", silhouette_with_ci(D, labels, "precomputed", cfg.n_boot, cfg.seed))
                add(sub, f"silhouette_{space}_null", shuffled_silhouette_null(D, labels, "precomputed", cfg.n_perm, cfg.seed))
    return out, emb2


def _numeric_metrics(cfg: UmapGeometry, X: np.ndarray, emb: np.ndarray, emb2: np.ndarray, y: np.ndarray, add) -> None:
    """Anisotropy, ridge R² and the discontinuity for one numeric labeling subset."""
    k = min(cfg.k_anisotropy, len(y) - 1)
    add("anisotropy", mean_with_ci(local_anisotropy(emb2, k=k), cfg.n_boot, seed=cfg.seed))
    for space, Z in (("raw", X), ("umap", emb)):
        r2, pred = ridge_r2_cv(Z, y, groups=y, seed=cfg.seed)
        add(f"r2_{space}", r2_with_ci(y, pred, cfg.n_boot, cfg.seed))
    add("r2_raw_null", shuffled_r2_null(X, y, groups=y, n_perm=5, seed=cfg.seed))
    at = cfg.discontinuity_at
    values = np.unique(y)
    if at is not None and at in values and np.any(values > at):
        add("discontinuity", discontinuity_with_ci(X, y, at=at, n_boot=cfg.n_boot, seed=cfg.seed))
        add("discontinuity_rank", _constant(step_rank(X, y, at=at), len(y)))
