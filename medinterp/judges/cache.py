"""On-disk cache of judge verdicts: one JSON file per request, so a rerun makes zero calls.

The key is the sha256 of everything that determines the judge's answer: the judge model, the rubric
version, the seed (it picks the order in which the two answers are shown), the prompt and both
answers. Each verdict is stored as ``<cache_dir>/judge/<key[:2]>/<key>.json``, written atomically
(:func:`medinterp.io.write_json`), so concurrent runs and crashes never leave a half-written file.
Only successful verdicts are cached; a missing item is retried on the next run. Files hold the score,
the rationale and the request's identifying fields, never credentials.
"""
from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path
from typing import Any

from medinterp.io import write_json

log = logging.getLogger(__name__)


def request_key(model: str, rubric_version: str, seed: int, prompt: str, clean_answer: str, ablated_answer: str) -> str:
    """sha256 hex digest of the fields that determine a verdict (JSON-encoded, so no separator can collide)."""
    fields = [model, rubric_version, int(seed), prompt, clean_answer, ablated_answer]
    return hashlib.sha256(json.dumps(fields, ensure_ascii=False).encode("utf-8")).hexdigest()


class VerdictCache:
    """``get``/``put`` verdict records by request key under ``<root>/judge/``; ``root=None`` disables caching."""

    def __init__(self, root: str | Path | None) -> None:
        self.folder = None if root is None else Path(root).expanduser() / "judge"

    def path(self, key: str) -> Path:
        assert self.folder is not None
        return self.folder / key[:2] / f"{key}.json"

    def get(self, key: str) -> dict[str, Any] | None:
        """The stored record, or None if absent, unreadable or not for this key."""
        if self.folder is None:
            return None
        path = self.path(key)
        try:
            record = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as err:  # a damaged file is a cache miss, not a crash
            log.warning("ignoring unreadable judge cache file %s (%s)", path, type(err).__name__)
            return None
        return record if isinstance(record, dict) and record.get("key") == key else None

    def put(self, key: str, record: dict[str, Any]) -> None:
        """Atomically store ``record`` (a JSON-able dict) under ``key``."""
        if self.folder is not None:
            write_json(self.path(key), {**record, "key": key})
