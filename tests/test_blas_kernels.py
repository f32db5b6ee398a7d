"""medinterp pins its BLAS libraries (medinterp/__init__.py): OpenBLAS's kernels, so that UMAP's numbers do not depend
on which x86 host runs, and MKL's reproducible mode with a fixed thread count, so that two runs on one host agree
to the bit."""
import json
import subprocess
import sys


def _openblas_architecture(code: str, env: dict[str, str]) -> str:
    probe = (f"{code}; import numpy, threadpoolctl, json; "
             "print(json.dumps([i.get('architecture') for i in threadpoolctl.threadpool_info() "
             "if i.get('internal_api') == 'openblas']))")
    out = subprocess.run([sys.executable, "-c", probe], env=env, capture_output=True, text=True, check=True).stdout
    return json.loads(out)[0]


def test_importing_medinterp_first_pins_openblas_to_haswell_kernels():
    import os

    env = {k: v for k, v in os.environ.items() if k != "OPENBLAS_CORETYPE"}
    assert _openblas_architecture("import medinterp", env) == "Haswell"


def test_a_coretype_the_user_set_is_kept():
    import os

    env = {**os.environ, "OPENBLAS_CORETYPE": "Sandybridge"}
    assert _openblas_architecture("import medinterp", env) == "Sandybridge"


def _mkl_modes(code: str, env: dict[str, str]) -> tuple[str, str]:
    """(CNR, Dyn) of MKL's first SGEMM after ``code``, as MKL_VERBOSE reports them."""
    probe = f"{code}; import torch; a = torch.ones(8, 8); a @ a"
    out = subprocess.run([sys.executable, "-c", probe], env={**env, "MKL_VERBOSE": "1"}, capture_output=True,
                         text=True, check=True).stdout
    line = next(row for row in out.splitlines() if "SGEMM" in row)
    fields = dict(word.split(":", 1) for word in line.split() if word.startswith(("CNR:", "Dyn:")))
    return fields["CNR"], fields["Dyn"]


def test_importing_medinterp_first_makes_mkl_reproducible():
    import os

    env = {k: v for k, v in os.environ.items() if k not in ("MKL_CBWR", "MKL_DYNAMIC")}
    pinned = _mkl_modes("pass", {**env, "MKL_CBWR": "AUTO", "MKL_DYNAMIC": "FALSE"})
    assert pinned[1] == "0" and pinned[0] != "OFF"
    assert _mkl_modes("pass", env) == ("OFF", "1")  # torch's defaults: the probe tells them apart
    assert _mkl_modes("import medinterp", env) == pinned


def test_mkl_settings_the_user_set_are_kept():
    import os

    env = {**os.environ, "MKL_CBWR": "COMPATIBLE", "MKL_DYNAMIC": "TRUE"}
    modes = _mkl_modes("import medinterp", env)
    assert modes == _mkl_modes("pass", env) and modes[1] == "1"
