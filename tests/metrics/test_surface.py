"""Tests for medinterp.metrics.surface: normalisation and the drug-stem structure it must capture."""
import numpy as np
import pytest

from medinterp.errors import MedinterpError
from medinterp.metrics import shuffled_silhouette_null, silhouette_with_ci, surface_features

STEMS = {  # 3 mechanism classes named by their stems
    "beta-blocker": ["metoprolol", "atenolol", "propranolol", "bisoprolol", "nadolol"],
    "ACE inhibitor": ["lisinopril", "enalapril", "ramipril", "captopril", "benazepril"],
    "statin": ["atorvastatin", "simvastatin", "rosuvastatin", "pravastatin", "lovastatin"],
}


def test_rows_are_unit_norm():
    F = surface_features(["metoprolol", "Atenolol 50 mg", "omeprazole"])
    assert F.dtype == np.float64 and F.shape[0] == 3
    np.testing.assert_allclose(np.linalg.norm(F, axis=1), 1.0)


def test_shared_stem_is_closer_than_unrelated_name():
    meto, aten, omep = surface_features(["metoprolol", "atenolol", "omeprazole"])
    assert meto @ aten > meto @ omep + 0.1  # rows are unit-norm, so @ is the cosine


def test_lowercased():
    F = surface_features(["Metoprolol", "metoprolol", "ramipril"])
    np.testing.assert_allclose(F[0], F[1])


@pytest.mark.parametrize("metric", ["euclidean", "cosine"])
def test_stems_separate_mechanism_classes(metric):
    names = [n for group in STEMS.values() for n in group]
    labels = np.repeat(list(STEMS), 5)
    F = surface_features(names)
    est = silhouette_with_ci(F, labels, metric=metric)
    assert est.value > 0.1
    assert est.value > shuffled_silhouette_null(F, labels, metric=metric).ci_high


@pytest.mark.parametrize("texts, match", [
    ("metoprolol", "must be a non-empty sequence of str. Got str"),
    ([], "non-empty sequence of str"),
    (["ramipril", "  "], "1 blank text"),
])
def test_bad_texts_are_refused(texts, match):
    with pytest.raises(MedinterpError, match=match):
        surface_features(texts)


@pytest.mark.parametrize("silhouette, surface, flagged", [
    (0.40, 0.20, True),    # exactly half: reaches the fraction
    (0.40, 0.19, False),
    (0.01, 0.006, True),   # a near-zero positive silhouette is flagged once the control reaches half of it
    (-0.10, 0.30, False),  # no clustering at the layer: nothing to explain
    (0.0, 0.30, False),
    (0.30, -0.05, False),  # spelling alone does not cluster
    (float("nan"), 0.3, False),
])
def test_explained_by_spelling_rule(silhouette, surface, flagged):
    from medinterp.metrics import explained_by_spelling

    assert explained_by_spelling(silhouette, surface, 0.5) is flagged


def test_explained_by_spelling_fraction_is_checked():
    from medinterp.errors import MedinterpError
    from medinterp.metrics import explained_by_spelling

    assert explained_by_spelling(0.4, 0.35, 0.9) is False and explained_by_spelling(0.4, 0.37, 0.9) is True
    with pytest.raises(MedinterpError, match="'fraction' parameter of explained_by_spelling must be in"):
        explained_by_spelling(0.4, 0.3, 0.0)
