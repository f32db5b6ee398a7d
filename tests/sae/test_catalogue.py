"""The catalogue's selectivity (AUROC against scikit-learn, a planted selective latent) and the per-latent table
against hand counts."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.metrics import roc_auc_score

from medinterp.sae.catalogue import catalogue_rows, latent_table, selectivity_auroc, token_type_columns, top_tokens


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


def test_token_type_columns_by_hand_base_rate_free():
    # 10 tokens, 2 image (types 1) and 8 text: latent 0 fires on image tokens only, 1 on text only, 2 alike on
    # every token (image_mass 0.2 = the image base rate, yet image_share 0.5: both), 3 never, 4 on one of each
    # at 1.0 and 0.2 (mu_image 0.5, mu_text 0.025: share 0.5 / 0.525 = 0.952, image)
    types = np.array([1, 1, 0, 0, 0, 0, 0, 0, 0, 0])
    f = torch.zeros(10, 5)
    f[:2, 0] = torch.tensor([1.0, 3.0])
    f[2:5, 1] = 2.0
    f[:, 2] = 1.5
    f[0, 4], f[5, 4] = 1.0, 0.2
    rows = token_type_columns(f, types)
    assert [r["token_type"] for r in rows] == ["image", "text", "both", "dead", "image"]
    assert [r["image_mass"] for r in rows][:3] == [1.0, 0.0, pytest.approx(0.2)]
    assert rows[2]["image_share"] == pytest.approx(0.5) and rows[4]["image_mass"] == pytest.approx(1.0 / 1.2)
    assert rows[4]["image_share"] == pytest.approx(0.5 / 0.525)
    assert np.isnan(rows[3]["image_mass"]) and np.isnan(rows[3]["image_share"])
    assert [r["token_type"] for r in token_type_columns(f, types, threshold=0.99)][4] == "both"
    text_only = token_type_columns(f, np.zeros(10, int))  # a text model: every live latent is text
    assert [r["token_type"] for r in text_only] == ["text", "text", "text", "dead", "text"]


def test_a_planted_sae_s_image_only_latents_are_labelled_image_in_the_table_and_catalogue():
    """Planted: 16 orthogonal features, 0-5 occur only in image tokens, 6-11 only in text tokens, 12-15 in both;
    image tokens are a 10 % minority. An SAE whose encoder is the dictionary (top-2, the planted sparsity)
    recovers each token's coefficients, and the table labels the three groups image / text / both."""
    from medinterp.sae import SAEConfig, SparseAutoencoder

    rng = np.random.default_rng(0)
    d = m = 16
    n, n_image = 2000, 200
    types = np.zeros(n, dtype=np.uint8)
    types[rng.choice(n, n_image, replace=False)] = 1
    pools = {1: np.r_[0:6, 12:16], 0: np.r_[6:16]}
    x = np.zeros((n, d), dtype=np.float32)
    for i in range(n):
        x[i, rng.choice(pools[int(types[i])], 2, replace=False)] = rng.uniform(0.5, 2.0, 2)
    eye = torch.eye(d)
    sae = SparseAutoencoder.from_tensors(SAEConfig(d, m, 2, "topk"), "planted", W_enc=eye, b_enc=torch.zeros(m),
                                         W_dec=eye, b_dec=torch.zeros(d))
    f = sae.encode(torch.from_numpy(x))
    torch.testing.assert_close(f, torch.from_numpy(x))  # the planted codes
    tokens = [[f"t{j}"] for j in range(m)]
    table = latent_table(f, tokens, group_ends=(m,), types=types)
    assert [r["token_type"] for r in table] == ["image"] * 6 + ["text"] * 6 + ["both"] * 4
    assert all(r["image_mass"] == 1.0 for r in table[:6]) and all(r["image_mass"] == 0.0 for r in table[6:12])
    assert all(r["image_mass"] < 0.3 and 0.3 < r["image_share"] < 0.7 for r in table[12:])  # minority, yet both
    labels = np.array(["a", "b"] * 10, dtype=object)
    acts = rng.random((20, m))
    acts[labels == "a", 2] += 5.0  # latent 2 (an image latent) is the most selective for "a"
    rows = catalogue_rows("dom", {"l": labels}, acts, tokens, 1, [r["token_type"] for r in table])
    first = {r["label"]: r for r in rows}
    assert (first["a"]["latent"], first["a"]["token_type"]) == (2, "image")
    assert first["b"]["token_type"] == table[first["b"]["latent"]]["token_type"]
