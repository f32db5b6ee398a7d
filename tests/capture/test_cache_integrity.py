"""The activation cache verifies every entry (sha256 in its metadata) and recaptures a damaged one with a warning."""
from __future__ import annotations

import json
import logging
import os

import numpy as np
import pytest

from medinterp.capture.cache import cached_activations, entry_path
from medinterp.capture.cache import ActivationCapture
from medinterp.prompts import load_prompt_set


@pytest.fixture()
def entry(tiny_handles, tmp_path):
    """A fresh cache entry for one template of the drugs set: (handle, prompt set, template, path, fresh array)."""
    h, ps = tiny_handles["llama"], load_prompt_set("drugs")
    t = ps.templates[0].id
    fresh = np.array(cached_activations(h, ps, t, cache_dir=tmp_path))
    path = entry_path(tmp_path, h, ps, t, "last")
    assert path.exists()
    return h, ps, t, path, fresh


def warnings_about(caplog, path):
    return [r for r in caplog.records if r.levelno == logging.WARNING and str(path) in r.getMessage()]


def test_a_truncated_entry_is_recaptured_with_a_warning_naming_it(entry, tmp_path, caplog):
    h, ps, t, path, fresh = entry
    with open(path, "r+b") as f:  # what a full disk or a killed copy leaves
        f.truncate(os.path.getsize(path) // 2)
    with caplog.at_level(logging.WARNING):
        again = np.array(cached_activations(h, ps, t, cache_dir=tmp_path))
    assert len(warnings_about(caplog, path)) == 1
    np.testing.assert_array_equal(again, fresh)
    caplog.clear()
    with caplog.at_level(logging.WARNING):  # the recaptured entry is good again: no warning
        np.testing.assert_array_equal(cached_activations(h, ps, t, cache_dir=tmp_path), fresh)
    assert not warnings_about(caplog, path)
    assert "sha256" in json.loads(path.with_suffix(".json").read_text())


def test_bytes_altered_in_place_are_detected(entry, tmp_path, caplog):
    h, ps, t, path, fresh = entry
    size = os.path.getsize(path)
    with open(path, "r+b") as f:  # same size, one value changed deep inside the data
        f.seek(size - 4 * 1000)
        byte = f.read(1)
        f.seek(size - 4 * 1000)
        f.write(bytes([byte[0] ^ 0xFF]))
    assert os.path.getsize(path) == size
    with caplog.at_level(logging.WARNING):
        again = np.array(cached_activations(h, ps, t, cache_dir=tmp_path))
    [record] = warnings_about(caplog, path)
    assert "checksum" in record.getMessage()
    np.testing.assert_array_equal(again, fresh)


def test_the_distributed_writer_checks_the_same_way(entry, tmp_path, caplog):
    """ActivationCapture (the driver's path) treats a damaged entry as not cached and reports it once."""
    h, ps, t, path, _ = entry
    assert ActivationCapture.cached(h, ps, [t], "last", tmp_path) == {t}
    with open(path, "r+b") as f:
        f.truncate(100)
    with caplog.at_level(logging.WARNING):
        assert ActivationCapture.cached(h, ps, [t], "last", tmp_path) == set()
    assert len(warnings_about(caplog, path)) == 1 and not path.exists()


def test_an_entry_without_a_checksum_is_stale(entry, tmp_path):
    """Entries written before the checksum existed are recaptured (their bytes cannot be verified)."""
    from medinterp.capture.cache import entry_meta

    h, ps, t, path, fresh = entry
    meta_path = path.with_suffix(".json")
    meta = json.loads(meta_path.read_text())
    del meta["sha256"]
    assert meta == entry_meta(h, ps, t, "last")
    meta_path.write_text(json.dumps(meta))
    assert ActivationCapture.cached(h, ps, [t], "last", tmp_path) == set()
    np.testing.assert_array_equal(cached_activations(h, ps, t, cache_dir=tmp_path), fresh)
    assert "sha256" in json.loads(meta_path.read_text())  # upgraded by the recapture
