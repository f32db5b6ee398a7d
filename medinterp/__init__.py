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
