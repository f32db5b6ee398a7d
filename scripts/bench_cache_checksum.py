"""Time the activation cache's checksum (medinterp/capture/cache.py) on entries of realistic size.

    python scripts/bench_cache_checksum.py [--n 400 4000] [--repeats 5]

An entry of Gemma-3-270M is (19 read-outs, 400 prompts, d=640) float32 ≈ 20 MB; ``--n 4000`` is ten times
that. Prints, per size, the best of ``repeats`` for a full sha256 of the file (what the cache stores and
verifies on every hit), for a size + sha256 of a 1-in-4096-bytes strided sample (the cheaper option the
issue named), and for ``np.load(mmap_mode="r")`` alone. The file is read once first, so the figures are
for a warm page cache (the usual case: it was just written or read by the last run).
"""
from __future__ import annotations

import argparse
import hashlib
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from medinterp.capture.cache import file_sha256  # noqa: E402


def best(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def strided(path: Path) -> str:
    raw = np.memmap(path, dtype=np.uint8, mode="r")
    h = hashlib.sha256(str(os.path.getsize(path)).encode())
    h.update(np.ascontiguousarray(raw[::4096]).tobytes())
    return h.hexdigest()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, nargs="+", default=[400, 4000])
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        for n in args.n:
            path = Path(tmp) / f"entry{n}.npy"
            np.save(path, np.random.default_rng(0).standard_normal((19, n, 640), dtype=np.float32))
            size = os.path.getsize(path) / 1e6
            file_sha256(path)  # warm the page cache
            full = best(lambda: file_sha256(path), args.repeats)
            sample = best(lambda: strided(path), args.repeats)
            load = best(lambda: np.load(path, mmap_mode="r"), args.repeats)
            print(f"(19, {n}, 640) float32, {size:.1f} MB: full sha256 {full * 1e3:.1f} ms ({size / full:.0f} MB/s); "
                  f"strided sample {sample * 1e3:.2f} ms; np.load mmap {load * 1e3:.2f} ms")


if __name__ == "__main__":
    main()
