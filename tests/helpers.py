"""Constants shared by tests (importable because pytest's ``pythonpath`` includes tests/)."""
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TINY_FAMILIES = ("llama", "gemma3", "qwen2", "qwen3")
