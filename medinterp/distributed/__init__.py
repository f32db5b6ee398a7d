"""Sharded and multi-process runs: strategies (single, device_map, ddp, zero3), their launch and weight placement,
and the memory plan. The driver that runs units across ranks is medinterp/run.py. See docs/distributed.md."""
from medinterp.distributed.strategy import STRATEGIES, Strategy, StrategyConfig, launcher_rank, make_strategy

__all__ = ["STRATEGIES", "Strategy", "StrategyConfig", "launcher_rank", "make_strategy"]
