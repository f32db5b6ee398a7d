"""Time every geometry metric (medinterp/metrics, issue 10) on one synthetic layer, with reference baselines.

    python scripts/bench_geometry_metrics.py [--n 20000] [--d 640] [--baseline] [--threads 1]

One layer: n rows of dimension d (float32, graded per-dimension scales), Y = tanh(X) + noise as the next
read-out, prompts of 20 rows, terms of 20 contexts. Prints the seconds of each function with its bootstrap
intervals (n_boot = 200). ``--baseline`` adds the obvious references, without intervals: scikit-learn
LinearRegression in-sample + 5 GroupKFold folds, scikit-dimension TwoNN and MLE (k = 20), and 10 exact
numpy bootstrap replicates of the spectral anisotropy (times 20 for 200). ``--threads`` sets torch's and
the BLAS threads (1 gives stable figures on a shared machine).
"""
from __future__ import annotations

import argparse
import os
import sys
import time
import warnings
from pathlib import Path

parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
parser.add_argument("--n", type=int, default=20_000)
parser.add_argument("--d", type=int, default=640)
parser.add_argument("--baseline", action="store_true")
parser.add_argument("--threads", type=int, default=1)
args = parser.parse_args()
for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[var] = str(args.threads)  # before numpy / torch load their BLAS

import numpy as np  # noqa: E402
import torch  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from medinterp.metrics import (anisotropy_cosine, anisotropy_spectral, intra_similarity,  # noqa: E402
                               intrinsic_dims, lens_stats, linearity_scores, mev, self_similarity)


def timed(label: str, fn) -> float:
    t0 = time.perf_counter()
    fn()
    seconds = time.perf_counter() - t0
    print(f"{label:40s} {seconds:7.2f} s", flush=True)
    return seconds


def main() -> None:
    torch.set_num_threads(args.threads)
    warnings.simplefilter("ignore")
    n, d = args.n, args.d
    rng = np.random.default_rng(0)
    X = (rng.normal(size=(n, d)) * np.linspace(0.1, 3, d)).astype(np.float32)
    Y = (np.tanh(X) + 0.1 * rng.normal(size=(n, d))).astype(np.float32)
    groups = np.arange(n) // 20
    Xt, Yt = torch.from_numpy(X), torch.from_numpy(Y)
    V = Xt[: n // 20 * 20].reshape(-1, 20, d)  # terms x contexts x d
    print(f"n = {n}, d = {d}, threads = {args.threads}, load average {os.getloadavg()[0]:.1f}")
    timed("linearity_scores (4 scores, CIs)", lambda: linearity_scores(Xt, Yt, groups))
    timed("anisotropy_spectral", lambda: anisotropy_spectral(Xt))
    timed("anisotropy_cosine (raw + standardised)",
          lambda: (anisotropy_cosine(Xt), anisotropy_cosine(Xt, standardize=True)))
    timed("intrinsic_dims (TwoNN + MLE, CIs)", lambda: intrinsic_dims(Xt))
    timed("self_similarity + mev + intra_similarity",
          lambda: (self_similarity(V), mev(V), intra_similarity(Xt, groups)))
    timed("lens_stats (B = 64, V = 262144)", lambda: lens_stats(torch.randn(64, 262_144), torch.randn(64, 262_144)))
    if not args.baseline:
        return
    import skdim
    from sklearn.linear_model import LinearRegression
    from sklearn.model_selection import GroupKFold

    def linearity_baseline() -> None:
        LinearRegression().fit(X, Y).predict(X)
        for train, test in GroupKFold(5).split(X, Y, groups):
            LinearRegression().fit(X[train], Y[train]).predict(X[test])

    def spectral_baseline() -> None:
        for rows in np.random.default_rng(0).integers(0, n, (10, n)):
            Z = X[rows].astype(np.float64)
            Z -= Z.mean(0)
            np.linalg.eigvalsh(Z.T @ Z)

    timed("BASELINE sklearn linearity (no CIs)", linearity_baseline)
    timed("BASELINE skdim TwoNN + MLE (no CIs)",
          lambda: (skdim.id.TwoNN(discard_fraction=0.1).fit(X), skdim.id.MLE().fit(X, n_neighbors=20)))
    seconds = timed("BASELINE numpy spectral, 10 replicates", spectral_baseline)
    print(f"{'  -> 200 replicates':40s} {20 * seconds:7.2f} s")


if __name__ == "__main__":
    main()
