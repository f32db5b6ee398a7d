"""medinterp.sae.outliers: massive-activation tokens are found by norm, left out of the store's rows (aligned with
their token ids), and spliced back unchanged."""
from __future__ import annotations

import json

import numpy as np
import torch

from medinterp.sae.activations import ActivationStore
from medinterp.sae.outliers import KeptRows, norm_limit, pass_through_outliers


def store_with_outliers(folder, n: int = 300, d: int = 8, outliers=(7, 150)) -> ActivationStore:
    """Rows of norm 1..2 (so the median norm is about 1.5) and two rows of norm 100 at ``outliers``; token id = row."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(n, d))
    x *= (1 + rng.random(n))[:, None] / np.linalg.norm(x, axis=1, keepdims=True)
    x[list(outliers)] *= 100 / np.linalg.norm(x[list(outliers)], axis=1, keepdims=True)
    (folder / "layer_3").mkdir(parents=True)
    np.save(folder / "layer_3" / "shard_00000.npy", x[:200].astype(np.float32))
    np.save(folder / "layer_3" / "shard_00001.npy", x[200:].astype(np.float32))
    np.save(folder / "token_ids.npy", np.arange(n, dtype=np.int32))
    meta = {"layers": [3], "d": d, "n_tokens": n, "shard_sizes": [200, n - 200],
            "mean_squared_norm": {"3": float(np.square(x).sum(1).mean())}}
    (folder / "meta.json").write_text(json.dumps(meta))
    return ActivationStore(folder)


def test_outlier_rows_are_left_out_and_the_rest_stay_aligned(tmp_path):
    store = store_with_outliers(tmp_path)
    x = store.rows(3, np.arange(store.n_tokens)).double()
    limit = norm_limit(store, 3, 4.0)
    assert limit == np.float64(4.0 * np.median(x.norm(dim=1).numpy())) and 4 < limit < 8
    kept = KeptRows(store, 3, limit)
    assert kept.n_outliers == 2 and kept.n_tokens == 298
    ids = kept.array("token_ids")
    assert 7 not in ids and 150 not in ids and len(ids) == 298
    got = torch.cat(list(kept.batches(3, 64)))
    assert torch.equal(got, store.rows(3, ids))  # row i of the view is the i-th kept row, with its token id
    want_msn = float(x[ids].square().sum(1).mean())
    assert kept.mean_squared_norm(3) == np.float64(want_msn) and store.mean_squared_norm(3) > 20 * want_msn
    assert abs(kept.scale(3) - (8 / want_msn) ** 0.5) < 1e-12
    assert KeptRows(store, 3, norm_limit(store, 3, None)).n_outliers == 0


def test_outliers_are_spliced_back_unchanged():
    h = torch.tensor([[3.0, 4.0], [30.0, 40.0], [0.0, 1.0]])  # norms 5, 50, 1
    out = pass_through_outliers(lambda v: torch.zeros_like(v), limit=10.0)(h)
    assert torch.equal(out, torch.tensor([[0.0, 0.0], [30.0, 40.0], [0.0, 0.0]]))
