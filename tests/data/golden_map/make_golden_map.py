"""Regenerate the golden tiny-model map (see tests/golden_map.py); only when a change of numbers is meant.

    .venv/bin/python tests/data/golden_map/make_golden_map.py
"""
import shutil
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from golden_map import GOLDEN, make_map  # noqa: E402

if __name__ == "__main__":
    with tempfile.TemporaryDirectory() as tmp:
        for cell, folder in make_map(Path(tmp)).items():
            (GOLDEN / cell).mkdir(parents=True, exist_ok=True)
            for name in ("per_layer.csv", "per_item.csv"):
                if (folder / name).is_file():
                    shutil.copy(folder / name, GOLDEN / cell / name)
            print(cell)
