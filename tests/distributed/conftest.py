"""Fixtures of the distributed tests."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))  # launch_helpers

from launch_helpers import make_cache  # noqa: E402


@pytest.fixture
def private_cache(tmp_path, cache_dir) -> Path:
    """A cache of the test's own (activations, resume checkpoints) sharing the user's built models."""
    return make_cache(tmp_path / "cache", cache_dir)
