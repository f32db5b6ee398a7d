"""Provenance: config_hash ignores where and how a run is written, run_id and versions have known values."""
from __future__ import annotations

import hashlib
import platform

import numpy as np

from medinterp.provenance import NUMBER_FREE_KEYS, config_hash, run_id, versions

CONFIG = {"seed": 0, "batch_size": 32, "model": {"name": "tiny_llama", "n_layers": 4},
          "method": {"n_neighbors": 15, "min_dist": 0.1}, "templates": "all"}


def test_config_hash_is_the_sha256_of_canonical_json():
    assert config_hash({"seed": 1, "a": [1, 2.5]}) == hashlib.sha256(b'{"a":[1,2.5],"seed":1}').hexdigest()


def test_config_hash_ignores_output_logger_device_and_key_order():
    moved = {"method": {"min_dist": 0.1, "n_neighbors": 15}, "templates": "all", "seed": 0,  # other key order
             "model": {"n_layers": 4, "name": "tiny_llama"}, "batch_size": 32,
             "out_dir": "/elsewhere", "cache_dir": "some/cache", "logger": {"name": "wandb", "project": "x"},
             "device": "cuda:1", "plots": False, "report": False, "resume": False, "use_activation_cache": False,
             "hydra": {"run": {"dir": "outputs/2026"}}}
    assert set(moved) - set(CONFIG) == set(NUMBER_FREE_KEYS)
    assert config_hash(moved) == config_hash(CONFIG)


def test_config_hash_changes_with_anything_that_decides_numbers():
    base = config_hash(CONFIG)
    assert config_hash({**CONFIG, "seed": 1}) != base
    assert config_hash({**CONFIG, "batch_size": 8}) != base
    assert config_hash({**CONFIG, "method": {"n_neighbors": 30, "min_dist": 0.1}}) != base


def test_run_id_is_a_short_hash_of_folder_and_start():
    started = "2026-12-04T20:30:00.000001+00:00"
    assert run_id("0_tiny-drugs-umap", started) == hashlib.sha256(
        f"0_tiny-drugs-umap@{started}".encode()).hexdigest()[:12]
    assert run_id("0_tiny-drugs-umap", started) != run_id("1_tiny-drugs-umap", started)


def test_versions_of_installed_and_missing_packages():
    assert versions(("numpy", "no-such-distribution-xyz")) == {
        "python": platform.python_version(), "numpy": np.__version__, "no-such-distribution-xyz": "not installed"}
