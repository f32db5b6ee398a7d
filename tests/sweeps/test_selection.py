"""Selections of a knowledge map as layer sets, Jaccard, best layer, method agreement (hand-checked)."""
from __future__ import annotations

import math

import pytest

from medinterp.sweeps.selection import (
    best_layer,
    jaccard,
    layers_of,
    map_agreement,
    mean_pairwise_jaccard,
    selected_layers,
)


def test_layers_of_inclusive_intervals():
    assert layers_of([[2, 4], [7, 7]]) == {2, 3, 4, 7}
    assert layers_of([]) == frozenset()


@pytest.mark.parametrize("a, b, expected", [({1, 2}, {2, 3}, 1 / 3), ({1, 2}, {1, 2}, 1.0), ({1}, {2}, 0.0),
                                            (set(), set(), 1.0), ({1}, set(), 0.0)])
def test_jaccard(a, b, expected):
    assert jaccard(a, b) == pytest.approx(expected)


def test_mean_pairwise_jaccard():
    mean, low = mean_pairwise_jaccard([frozenset({1, 2}), frozenset({1, 2}), frozenset({2, 3})])
    assert mean == pytest.approx((1 + 1 / 3 + 1 / 3) / 3) and low == pytest.approx(1 / 3)
    assert all(math.isnan(v) for v in mean_pairwise_jaccard([frozenset({1})]))


def test_best_layer_is_the_first_maximum_and_skips_missing_values():
    assert best_layer({"curve": [None, 0.2, 0.9, 0.9, 0.1]}) == 2
    assert best_layer({"curve": [None, None]}) is None


def test_consensus_is_only_a_selection_where_enough_methods_ran(kit):
    m = kit.kmap({"age": {"umap": [[3, 5]], "saliency": [[4, 6]], "consensus": [[4, 5]]},
              "drugs": {"umap": [[1, 2]], "consensus": []}})
    sel = selected_layers(m)
    assert sel[("age", "umap")] == {3, 4, 5} and sel[("age", "consensus")] == {4, 5}
    assert ("drugs", "consensus") not in sel  # one method < min_methods = 2: the consensus is empty by construction
    assert ("drugs", "consensus") in selected_layers(kit.kmap({"drugs": {"umap": [[1, 2]], "consensus": [[1, 2]]}},
                                                          {"min_methods": 1}))


def test_map_agreement_averages_domains_with_two_methods(kit):
    m = kit.kmap({"age": {"umap": [[3, 5]], "saliency": [[4, 6]]},        # {3,4,5} vs {4,5,6}: 2/4
              "disease": {"umap": [[1, 2]], "patching": [[1, 2]]},     # identical: 1
              "drugs": {"umap": [[1, 2]]}})                            # one method: not counted
    assert map_agreement(m) == pytest.approx((0.5 + 1.0) / 2)
    assert math.isnan(map_agreement(kit.kmap({"drugs": {"umap": [[1, 2]]}})))
