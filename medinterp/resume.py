"""Resume: every finished unit of a cell (one prompt batch of one method on one domain, and for UMAP each
layer of the statistics stage that follows the capture) is checkpointed.

A cell's checkpoints live in ``<cache>/resume/<key>/``, where the key hashes everything that decides
its numbers (model, domain and prompt-set hash, method and its settings, templates, labelings,
reduction, batch size) and nothing that does not (the strategy, the device, the output folder, plots).
So a run killed at any point (``kill -9`` of every rank) and started again with the same config, into
a new output folder or the same one, under the same or another strategy, recomputes only the batches
(and UMAP layers) that had not reached rank 0, and ends with the same tables as an uninterrupted run. The folder is
removed once the cell's results are written.

Only rank 0 touches the store. Each unit is one pickle, written atomically (a kill leaves either the
complete file or none).
"""
from __future__ import annotations

import hashlib
import json
import pickle
import re
import shutil
from pathlib import Path
from typing import Any

from medinterp.io import atomic_path


def resume_key(parts: dict[str, Any]) -> str:
    """A short stable hash of ``parts`` (JSON with sorted keys)."""
    text = json.dumps(parts, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


class Checkpoints:
    """The unit checkpoints of one cell: ``save``, ``load``, ``done``, and ``clear`` when the cell is written."""

    def __init__(self, folder: str | Path | None) -> None:
        self.folder = Path(folder) if folder is not None else None

    @property
    def enabled(self) -> bool:
        return self.folder is not None

    def _path(self, unit: str) -> Path:
        assert self.folder is not None
        return self.folder / f"{re.sub(r'[^A-Za-z0-9_.-]', '_', unit)}.pkl"

    def done(self) -> set[str]:
        """Units whose checkpoint is complete."""
        if self.folder is None or not self.folder.is_dir():
            return set()
        return {p.stem for p in self.folder.glob("*.pkl")}

    def save(self, unit: str, result: Any) -> None:
        if self.folder is None:
            return
        with atomic_path(self._path(unit)) as tmp, open(tmp, "wb") as f:
            pickle.dump(result, f, protocol=pickle.HIGHEST_PROTOCOL)

    def load(self, unit: str) -> Any:
        with open(self._path(unit), "rb") as f:
            return pickle.load(f)

    def clear(self) -> None:
        if self.folder is not None:
            shutil.rmtree(self.folder, ignore_errors=True)
