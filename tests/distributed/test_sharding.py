"""The lockstep batch split, resume checkpoints and strategy settings (no process group needed)."""
from __future__ import annotations

import pytest

from medinterp.distributed import StrategyConfig, make_strategy
from medinterp.resume import Checkpoints, resume_key
from medinterp.run import my_units, run_units
from medinterp.errors import MedinterpError


def test_units_round_robin_with_padding_rounds():
    todo = ["a", "b", "c", "d", "e"]
    assert my_units(todo, 0, 2) == ["a", "c", "e"]
    assert my_units(todo, 1, 2) == ["b", "d", None]  # same round count on every rank
    assert my_units(todo, 2, 3) == ["c", None]
    assert sorted(u for r in range(3) for u in my_units(todo, r, 3) if u) == todo
    assert my_units([], 0, 4) == []


def test_run_units_single_gives_every_result_once():
    seen = {}
    run_units(make_strategy(None, "cpu"), ["x", "y"], lambda u: u * 2, seen.__setitem__)
    assert seen == {"x": "xx", "y": "yy"}


def test_checkpoints_round_trip_and_clear(tmp_path):
    store = Checkpoints(tmp_path / "cell")
    assert store.done() == set()
    store.save("b00001", {"v": [1, 2]})
    store.save("t000-b00002", 3.5)
    assert store.done() == {"b00001", "t000-b00002"} and store.load("b00001") == {"v": [1, 2]}
    assert not list((tmp_path / "cell").glob(".*.tmp"))
    store.clear()
    assert not (tmp_path / "cell").exists()
    off = Checkpoints(None)
    off.save("b00001", 1)
    assert off.done() == set() and not off.enabled


def test_resume_key_ignores_key_order_only():
    assert resume_key({"a": 1, "b": [1, 2]}) == resume_key({"b": [1, 2], "a": 1})
    assert resume_key({"a": 1}) != resume_key({"a": 2})


def test_strategy_settings_are_validated():
    assert make_strategy({"name": "single"}, "cpu").world_size == 1
    with pytest.raises(MedinterpError, match="unknown strategy 'fsdp'; valid: ddp, device_map, single, zero3"):
        StrategyConfig(name="fsdp")
    with pytest.raises(MedinterpError, match=r"unknown strategy setting\(s\) \['gpus'\]"):
        StrategyConfig.from_dict({"name": "ddp", "gpus": 2})
    with pytest.raises(MedinterpError, match="unknown strategy.offload_params 'ssd'; valid: cpu, none, nvme"):
        StrategyConfig(name="zero3", offload_params="ssd")
    with pytest.raises(MedinterpError, match="strategy.devices must be 'auto' or an int >= 1"):
        StrategyConfig(name="ddp", devices=0)
