"""medinterp: where medical knowledge lives inside large language models, layer by layer."""
from __future__ import annotations

import os as _os

__version__ = "0.1.0"

# Same numbers on every host of a machine kind. numpy/scipy's OpenBLAS picks its kernels by CPU (SkylakeX on an
# AVX-512 AMD EPYC, Haswell elsewhere), and the last-bit differences of those kernels in UMAP's spectral
# initialisation grow, through UMAP's stochastic layout, into silhouettes that differ by up to 0.05 between hosts
# (measured on the golden tiny-model map, tests/data/golden_map/). The Haswell (AVX2) kernels run on every x86-64
# host we support. OpenBLAS reads this once, when numpy loads: import medinterp first (the runners and the tests
# do), or set OPENBLAS_CORETYPE yourself; a value already set is kept.
_os.environ.setdefault("OPENBLAS_CORETYPE", "Haswell")

# Same numbers run after run on one host. torch's CPU BLAS is MKL, which by default may pick its thread count and
# work schedule per call (MKL_VERBOSE shows "CNR:OFF Dyn:1"); on a CI host two same-seed saliency runs once differed
# by ~1e-8 relative in every value, the loss included (2026-12-06; never seen on the AMD hosts, where these settings
# leave every number of that run unchanged). Conditional numerical reproducibility (MKL_CBWR=AUTO: the host's best
# code path, deterministic schedules) and a fixed thread count (MKL_DYNAMIC=FALSE) remove that freedom. Read when
# MKL starts, so also only if medinterp is imported before torch does its first BLAS call; values you set are kept.
_os.environ.setdefault("MKL_CBWR", "AUTO")
_os.environ.setdefault("MKL_DYNAMIC", "FALSE")
