"""The catalogue's selectivity (AUROC against scikit-learn, a planted selective latent) and the per-latent table
against hand counts."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.metrics import roc_auc_score

from medinterp.sae.catalogue import catalogue_rows, latent_table, selectivity_auroc, top_tokens


def test_auroc_equals_scikit_learn_per_column_ties_included():
    rng = np.random.default_rng(0)
    acts = rng.integers(0, 4, size=(60, 7)).astype(float)  # many ties
    acts[:, 6] = 0.0  # a latent silent on every prompt
    positive = rng.random(60) < 0.3
    got = selectivity_auroc(acts, positive)
    want = [roc_auc_score(positive, acts[:, j]) for j in range(7)]
    np.testing.assert_allclose(got, want, rtol=1e-12)
    assert got[6] == 0.5
    assert np.isnan(selectivity_auroc(acts, np.zeros(60, bool))).all()


def test_the_planted_selective_latent_ranks_first_for_its_label():
    rng = np.random.default_rng(1)
    labels = np.array(["cardio", "neuro", "renal"] * 20, dtype=object)
    acts = rng.random((60, 5)) * 0.1
    acts[labels == "neuro", 3] += 1.0  # latent 3 fires on neuro prompts only
    acts[labels == "renal", 1] += 0.05  # latent 1 leans renal
    tokens = [[f"t{j}"] for j in range(5)]
    rows = catalogue_rows("dom", {"system": labels}, acts, tokens, n_per_label=2)
    assert len(rows) == 3 * 2 and {r["labeling"] for r in rows} == {"system"}
    neuro = [r for r in rows if r["label"] == "neuro"]
    assert (neuro[0]["latent"], neuro[0]["auroc"], neuro[0]["rank"]) == (3, 1.0, 1)
    assert neuro[0]["n_label"] == 20 and neuro[0]["n_rest"] == 40 and neuro[0]["top_tokens"] == "t3"
    assert neuro[0]["mean_act_label"] > 1 > neuro[0]["mean_act_rest"]
    assert neuro[1]["auroc"] < 1.0
    assert [r for r in rows if r["label"] == "renal"][0]["latent"] == 1
    cardio = [r for r in rows if r["label"] == "cardio"]
    assert all(r["latent"] not in (1, 3) for r in cardio)  # both score low for cardio


def test_latent_table_and_top_tokens_by_hand():
    f = torch.tensor([[0.0, 2.0, 0.0], [1.0, 3.0, 0.0], [0.0, 3.0, 0.0], [4.0, 0.5, 0.0]])  # (tokens, m)
    ids = np.array([7, 8, 9, 7])
    tokens = top_tokens(f, ids, decode=lambda i: f"<{i}>", top_n=4, keep=2)
    assert tokens[0] == ["<7>", "<8>"]  # 4.0 at token 7, then 1.0 at token 8
    assert tokens[1][0] in ("<8>", "<9>") and len(tokens[1]) == 2  # two 3.0s, then 2.0
    assert tokens[2] == []  # never fires
    rows = latent_table(f, tokens, group_ends=(1, 3))
    assert [r["group"] for r in rows] == [0, 1, 1]
    assert rows[0]["frequency"] == 0.5 and rows[0]["mean_activation"] == 2.5 and rows[0]["max_activation"] == 4.0
    assert rows[1]["frequency"] == 1.0 and rows[1]["mean_activation"] == pytest.approx(8.5 / 4)
    assert rows[2]["dead"] and rows[2]["frequency"] == 0.0 and rows[2]["top_tokens"] == ""
