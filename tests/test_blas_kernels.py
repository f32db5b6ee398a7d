"""medinterp pins OpenBLAS's kernels (medinterp/__init__.py): UMAP's numbers must not depend on which x86 host runs."""
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
