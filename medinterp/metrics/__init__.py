"""Pure metric functions for the per-layer geometry method (methods.md 1.1): arrays in, numbers out.

bootstrap      Estimate (value, ci_low, ci_high, n), bootstrap_ci, mean_with_ci
cluster        silhouette_with_ci, shuffled_silhouette_null        (categorical domains)
anisotropy     local_anisotropy, local_anisotropy_null             (age: local line-likeness)
regression     ridge_r2_cv, r2_with_ci, shuffled_r2_null, ridge_r2_with_null  (age: linear read-out R^2)
discontinuity  adjacent_steps, discontinuity_score, discontinuity_with_ci, step_rank  (age jump at 17 -> 18)
surface        surface_features, explained_by_spelling             (spelling-only control for drug names)

Representation geometry (issue 10, docs/geometry.md; torch in, on the input's device; Scored = Estimate + note):
linearity      linearity_scores        (in-sample / held-out / residual linearity, token nonlinearity)
isotropy       anisotropy_spectral, anisotropy_cosine   (global anisotropy; two quantities, two names)
intrinsic_dim  twonn, mle_id, intrinsic_dims           (scikit-dimension's TwoNN and Levina-Bickel MLE)
contextual     self_similarity, mev, intra_similarity  (Ethayarajh 2019)
lens           lens_stats              (logit lens: KL to the final distribution, rank, top-1 agreement)

Vision-language localisation (docs/multimodal.md): localization  patches_in_box, upsample, energy_in_box, pointing_hit

Invalid input raises medinterp.errors.MedinterpError; randomness only through an explicit ``seed``.
"""
from __future__ import annotations

from medinterp.metrics.anisotropy import local_anisotropy, local_anisotropy_null
from medinterp.metrics.bootstrap import Estimate, Scored, bootstrap_ci, finite_mean_with_ci, mean_with_ci
from medinterp.metrics.cluster import shuffled_silhouette_null, silhouette_with_ci
from medinterp.metrics.contextual import intra_similarity, mev, self_similarity
from medinterp.metrics.discontinuity import adjacent_steps, discontinuity_score, discontinuity_with_ci, step_rank
from medinterp.metrics.intrinsic_dim import intrinsic_dims, mle_id, twonn
from medinterp.metrics.isotropy import anisotropy_cosine, anisotropy_spectral
from medinterp.metrics.lens import lens_stats
from medinterp.metrics.linearity import linearity_scores
from medinterp.metrics.regression import r2_with_ci, ridge_r2_cv, ridge_r2_with_null, shuffled_r2_null
from medinterp.metrics.surface import explained_by_spelling, surface_features

__all__ = [
    "Estimate", "Scored", "bootstrap_ci", "finite_mean_with_ci", "mean_with_ci",
    "silhouette_with_ci", "shuffled_silhouette_null",
    "local_anisotropy", "local_anisotropy_null",
    "ridge_r2_cv", "r2_with_ci", "shuffled_r2_null", "ridge_r2_with_null",
    "adjacent_steps", "discontinuity_score", "discontinuity_with_ci", "step_rank",
    "surface_features", "explained_by_spelling",
    "linearity_scores", "anisotropy_spectral", "anisotropy_cosine", "twonn", "mle_id", "intrinsic_dims",
    "self_similarity", "mev", "intra_similarity", "lens_stats",
]
