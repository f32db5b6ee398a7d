"""Surface-form control: what spelling alone gives.

A model's activations can separate drug classes just because the names share letters: beta-blockers end
in -olol, ACE inhibitors in -pril, statins in -statin, proton-pump inhibitors in -prazole. Before crediting
a layer with knowledge of a mechanism class, compare its silhouette with the silhouette of these
character n-gram features: a layer that does no better than spelling has not shown more than spelling.

Features: TF-IDF of character n-grams within word boundaries (scikit-learn ``TfidfVectorizer`` with
analyzer="char_wb", lowercase, sublinear tf = 1 + log(tf)), with IDF fitted on the given texts only,
as dense L2-normalised rows (so Euclidean and cosine distances are monotonically related).
Reference: Sparck Jones 1972 (IDF); Salton & Buckley 1988 (tf-idf weighting).
"""
from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from sklearn.feature_extraction.text import TfidfVectorizer

from medinterp.errors import MedinterpError
from medinterp.metrics._validation import check_int


def surface_features(texts: Sequence[str], ngram_range: tuple[int, int] = (2, 4)) -> np.ndarray:
    """Character n-gram TF-IDF features of ``texts``: (n_texts, n_ngrams) float64, unit L2 rows.

    texts: a non-empty sequence of non-blank strings (a single str is refused, as it would be read as
    a sequence of characters); ngram_range: (min_n, max_n) with 1 <= min_n <= max_n.
    """
    fn = "surface_features"
    if isinstance(texts, str) or not all(isinstance(t, str) for t in texts) or len(texts) == 0:
        raise MedinterpError(f"The 'texts' parameter of {fn} must be a non-empty sequence of str. "
                             f"Got {type(texts).__name__} instead.")
    blank = [i for i, t in enumerate(texts) if not t.strip()]
    if blank:
        raise MedinterpError(f"{fn} got {len(blank)} blank text(s), first at index {blank[0]}; "
                             "they have no n-grams.")
    lo = check_int(ngram_range[0], "ngram_range[0]", fn, 1)
    hi = check_int(ngram_range[1], "ngram_range[1]", fn, lo)
    vec = TfidfVectorizer(analyzer="char_wb", ngram_range=(lo, hi), lowercase=True, sublinear_tf=True, norm="l2")
    return vec.fit_transform(list(texts)).toarray().astype(np.float64)


def explained_by_spelling(silhouette: float, surface: float, fraction: float = 0.5) -> bool:
    """Does spelling alone reach ``fraction`` of a layer's silhouette?

    True when the layer clusters (``silhouette > 0``), spelling clusters too (``surface > 0``), and
    ``surface >= fraction * silhouette``. A layer with silhouette <= 0 shows no clustering, so there is
    nothing for spelling to explain (False, however high the control); a control <= 0 explains
    nothing (False). A near-zero positive silhouette is flagged as soon as the control reaches the
    fraction of it. NaN on either side gives False. fraction: in (0, 1].
    """
    if not 0.0 < fraction <= 1.0:
        raise MedinterpError(f"The 'fraction' parameter of explained_by_spelling must be in (0, 1]. Got {fraction!r} instead.")
    if not (math.isfinite(silhouette) and math.isfinite(surface)):
        return False
    return silhouette > 0.0 and surface > 0.0 and surface >= fraction * silhouette
