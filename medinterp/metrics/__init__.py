"""Pure metric functions for the per-layer geometry method (methods.md 1.1): arrays in, numbers out.

bootstrap      Estimate (value, ci_low, ci_high, n), bootstrap_ci, mean_with_ci
cluster        silhouette_with_ci, shuffled_silhouette_null        (categorical domains)
anisotropy     local_anisotropy, local_anisotropy_null             (age: local line-likeness)
regression     ridge_r2_cv, r2_with_ci, shuffled_r2_null, ridge_r2_with_null  (age: linear read-out R^2)
discontinuity  adjacent_steps, discontinuity_score, discontinuity_with_ci, step_rank  (age jump at 17 -> 18)
surface        surface_features, explained_by_spelling             (spelling-only control for drug names)

Invalid input raises medinterp.errors.MedinterpError; randomness only through an explicit ``seed``.
"""
from __future__ import annotations

from medinterp.metrics.anisotropy import local_anisotropy, local_anisotropy_null
from medinterp.metrics.bootstrap import Estimate, bootstrap_ci, finite_mean_with_ci, mean_with_ci
from medinterp.metrics.cluster import shuffled_silhouette_null, silhouette_with_ci
from medinterp.metrics.discontinuity import adjacent_steps, discontinuity_score, discontinuity_with_ci, step_rank
from medinterp.metrics.regression import r2_with_ci, ridge_r2_cv, ridge_r2_with_null, shuffled_r2_null
from medinterp.metrics.surface import explained_by_spelling, surface_features

__all__ = [
    "Estimate", "bootstrap_ci", "finite_mean_with_ci", "mean_with_ci",
    "silhouette_with_ci", "shuffled_silhouette_null",
    "local_anisotropy", "local_anisotropy_null",
    "ridge_r2_cv", "r2_with_ci", "shuffled_r2_null", "ridge_r2_with_null",
    "adjacent_steps", "discontinuity_score", "discontinuity_with_ci", "step_rank",
    "surface_features", "explained_by_spelling",
]
