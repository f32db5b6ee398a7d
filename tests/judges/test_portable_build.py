"""The installed llama-cpp-python is the portable build (issue 16 §1): no AVX-512 or AMX instruction in its
libraries, so a wheel built on one x86 host runs on any other with AVX2 (the Makefile builds it with
GGML_NATIVE=OFF, AVX2/FMA/F16C; a native build on an AVX-512 host, like the one this was written on, has
thousands of zmm instructions in libggml-cpu.so and dies with SIGSEGV on an AVX2-only host)."""
from __future__ import annotations

import importlib.util
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from helpers import ROOT

SPEC = importlib.util.find_spec("llama_cpp")
# AVX-512: the zmm registers, the opmask registers k0-k7, x/ymm16-31, and instructions that exist only with EVEX
# encoding (AVX-512VL code can use ymm0-15 alone: vpternlogd, vpermt2b, ...); AMX: tile instructions
AVX512_OR_AMX = re.compile(r"%zmm\d|%k[0-7]\b|%[xy]mm(1[6-9]|2\d|3[01])\b|\b(tileloadd|tdpb[su][su]d|tdpbf16ps)\b"
                           r"|\b(vpternlog[dq]|vpro[lr]v?[dq]|vpermt2|vpermi2|vpcompress|vpexpand|vpconflict|vplzcnt"
                           r"|vrcp14|vrsqrt14|vscalef|vgetexp|vgetmant|vfixupimm|vrange|vreduce|vpmovm2|vpmov[bwdq]2m"
                           r"|vpopcnt|vcvtne2ps2bf16|vdpbf16ps)")


def libraries() -> list[Path]:
    lib = Path(SPEC.origin).parent / "lib"
    return sorted(p for p in lib.glob("*.so") if p.is_file())  # the wheel also ships .so.N copies of each


def avx512_lines(path: Path, limit: int = 3) -> list[str]:
    """The first ``limit`` disassembled lines of ``path`` that use AVX-512 or AMX (objdump -d, AT&T syntax)."""
    proc = subprocess.Popen(["objdump", "-d", "--no-show-raw-insn", str(path)], stdout=subprocess.PIPE, text=True)
    found = []
    for line in proc.stdout:
        if AVX512_OR_AMX.search(line):
            found.append(line.strip())
            if len(found) >= limit:
                break
    proc.kill()
    proc.wait()
    return found


@pytest.mark.skipif(SPEC is None, reason="llama_cpp is not installed (make test installs the portable build)")
@pytest.mark.skipif(shutil.which("objdump") is None, reason="objdump (binutils) is not installed")
def test_the_installed_llama_cpp_libraries_use_no_avx512_or_amx():
    libs = libraries()
    assert any(p.name.startswith("libggml-cpu") for p in libs), f"no libggml-cpu in {[p.name for p in libs]}"
    offenders = {p.name: lines for p in libs if (lines := avx512_lines(p))}
    assert not offenders, ("llama-cpp-python was built for this host's CPU (GGML_NATIVE=ON?), not portably: "
                           f"{offenders}; rebuild it with `make test` (see the Makefile)")


@pytest.mark.skipif(shutil.which("objdump") is None, reason="objdump (binutils) is not installed")
def test_the_check_sees_avx512_where_there_is_some():
    """A positive control: numpy's PyPI wheels carry AVX-512 kernels (runtime dispatch), so the check fires."""
    import numpy

    core = sorted(Path(numpy.__file__).parent.glob("_core/_multiarray_umath*.so"))
    if not core:
        pytest.skip("numpy's _multiarray_umath library not found")
    assert avx512_lines(core[0], limit=1)


def test_the_makefile_builds_llama_cpp_portably_from_the_pinned_version():
    makefile = (ROOT / "Makefile").read_text()
    assert "-DGGML_NATIVE=OFF" in makefile and "-march=native" not in makefile
    assert "--no-cache-dir" in makefile and "--no-index" in makefile
    pins = [ln for ln in (ROOT / "constraints.txt").read_text().splitlines() if ln.startswith("llama-cpp-python==")]
    assert len(pins) == 1
