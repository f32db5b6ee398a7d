"""Sharded and multi-process runs: strategies (single, device_map, ddp, zero3), the lockstep batch driver,
resume checkpoints and the memory plan. See docs/distributed.md."""
from medinterp.distributed.resume import Checkpoints, resume_key
from medinterp.distributed.sharded import my_units, run_units
from medinterp.distributed.strategy import STRATEGIES, Strategy, StrategyConfig, launcher_rank, make_strategy

__all__ = ["STRATEGIES", "Checkpoints", "Strategy", "StrategyConfig", "launcher_rank", "make_strategy", "my_units",
           "resume_key", "run_units"]
