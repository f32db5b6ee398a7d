"""Constants and helpers shared by tests (importable because pytest's ``pythonpath`` includes tests/)."""
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TINY_FAMILIES = ("llama", "gemma3", "qwen2", "qwen3", "gpt_oss")


def run_runner(script: str, *args: str, cwd: Path = ROOT, env: dict | None = None, check: bool = True,
               timeout: float = 600) -> subprocess.CompletedProcess:
    """``python runners/<script> *args`` in a subprocess (one-line Hydra errors, unbuffered); with ``check``,
    a non-zero exit raises with the tails of stdout and stderr."""
    env = {**os.environ, "HYDRA_FULL_ERROR": "0", "PYTHONUNBUFFERED": "1", **(env or {})}
    proc = subprocess.run([sys.executable, str(ROOT / "runners" / script), *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"exit {proc.returncode}\nSTDOUT\n{proc.stdout[-3000:]}\nSTDERR\n{proc.stderr[-3000:]}")
    return proc
