"""Strategies: how many processes run a cell, where the weights live, and how results come back to rank 0.

=============  ==========  ==================================================================  =============
strategy       processes   weights                                                             launcher
=============  ==========  ==================================================================  =============
``single``     1           the whole model on one device                                       python
``device_map`` 1           accelerate's big-model placement over this machine's GPUs, then     python
                           CPU, then disk (``max_memory``, ``offload_folder``)
``ddp``        N           a full replica per rank; prompts split across ranks                 torchrun / Fabric
``zero3``      N           DeepSpeed ZeRO-3: each rank holds 1/N of every parameter (partitioned  torchrun / deepspeed /
                           while loading), gathered layer by layer; prompts split across ranks  srun torchrun
=============  ==========  ==================================================================  =============

``ddp`` and ``zero3`` run on Lightning Fabric: Fabric finds the ranks from the launcher's environment
(torchrun, SLURM, or its own subprocess launcher), sets up the process group and the device, and, for
``zero3``, builds the DeepSpeed engine (:mod:`medinterp.distributed.deepspeed_cpu` lets that run on the
CPU over gloo, for CI). ``single`` and ``device_map`` need no process group and do not import Lightning
(5 s of imports saved per run).

Methods never see the strategy: they get a :class:`~medinterp.models.ModelHandle` whose model runs its
forward the same way under every placement. The strategy gives the driver (medinterp/run.py) ranks, a barrier and
:meth:`Strategy.gather` (objects to rank 0), and :meth:`Strategy.load`.
"""
from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from medinterp.errors import MedinterpError, unknown_choice
from medinterp.models import ModelHandle, ModelSpec, load_model, resolve_device
from medinterp.models import Placement
from medinterp.validation import is_int

log = logging.getLogger(__name__)

STRATEGIES = ("single", "device_map", "ddp", "zero3")
OFFLOAD = ("none", "cpu", "nvme")


@dataclass(frozen=True)
class StrategyConfig:
    """``conf/strategy/<name>.yaml`` as plain data (validated here; the runner never interprets it)."""

    name: str = "single"
    accelerator: str = "auto"  # auto | cpu | cuda (ddp, zero3)
    devices: int | str = "auto"  # processes per node (ddp, zero3); "auto" = all GPUs, or the launcher's count
    num_nodes: int = 1
    backend: str = "auto"  # process-group backend: auto (nccl on GPUs, gloo on CPU) | nccl | gloo
    # zero3
    offload_params: str = "none"  # none | cpu | nvme
    nvme_path: str = "/local_nvme"
    param_persistence_threshold: int = 100_000
    build_shm_op: bool = False  # DeepSpeed's CPU shared-memory comm op (JIT g++ build; ZeRO-3 does not need it)
    # device_map
    device_map: str = "auto"  # auto | balanced | balanced_low_0 | sequential
    max_memory: dict | None = None  # e.g. {0: 70GiB, 1: 70GiB, cpu: 200GiB}; null = what is free
    offload_folder: str | None = None  # where weights beyond max_memory go (disk offload)

    def __post_init__(self) -> None:
        if self.name not in STRATEGIES:
            raise unknown_choice("strategy", self.name, STRATEGIES)
        if self.accelerator not in ("auto", "cpu", "cuda", "gpu"):
            raise unknown_choice("strategy.accelerator", self.accelerator, ("auto", "cpu", "cuda"))
        if self.offload_params not in OFFLOAD:
            raise unknown_choice("strategy.offload_params", self.offload_params, OFFLOAD)
        if self.backend not in ("auto", "nccl", "gloo"):
            raise unknown_choice("strategy.backend", self.backend, ("auto", "nccl", "gloo"))
        if self.devices != "auto" and (not is_int(self.devices) or self.devices < 1):
            raise MedinterpError(f"strategy.devices must be 'auto' or an int >= 1; got {self.devices!r}")
        if not is_int(self.num_nodes) or self.num_nodes < 1:
            raise MedinterpError(f"strategy.num_nodes must be an int >= 1; got {self.num_nodes!r}")

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> StrategyConfig:
        from dataclasses import fields

        known = {f.name for f in fields(cls)}
        extra = sorted(set(data) - known)
        if extra:
            raise MedinterpError(f"unknown strategy setting(s) {extra}; valid: {', '.join(sorted(known))}")
        return cls(**data)


def launcher_rank() -> tuple[int, int]:
    """(global rank, world size) from the launcher's environment (torchrun, deepspeed, SLURM, Fabric), before
    any process group exists; (0, 1) when nothing launched us."""
    for rank, world in (("RANK", "WORLD_SIZE"), ("SLURM_PROCID", "SLURM_NTASKS")):
        if rank in os.environ and world in os.environ:
            return int(os.environ[rank]), int(os.environ[world])
    if "LOCAL_RANK" in os.environ:  # Fabric's subprocess launcher sets LOCAL_RANK (and NODE_RANK) only
        return int(os.environ["LOCAL_RANK"]), int(os.environ.get("WORLD_SIZE", 0)) or -1
    return 0, 1


class Strategy:
    """One process on one device (``single``); the base of the others."""

    def __init__(self, config: StrategyConfig, device: str = "auto") -> None:
        self.config = config
        self.device = device

    name = property(lambda self: self.config.name)
    rank = property(lambda self: 0)
    world_size = property(lambda self: 1)

    @property
    def is_rank_zero(self) -> bool:
        return self.rank == 0

    def launch(self) -> Strategy:
        """Join the process group (a no-op for one process); returns self."""
        return self

    def barrier(self) -> None:
        """Wait for every rank (a no-op for one process)."""

    def gather(self, obj: Any) -> list[Any] | None:
        """Every rank's ``obj``, by rank, on rank 0; None on the other ranks."""
        return [obj]

    def broadcast(self, obj: Any) -> Any:
        """Rank 0's ``obj`` on every rank."""
        return obj

    def placement(self, spec: ModelSpec, cache_dir: Path) -> Placement:
        return Placement()

    def load(self, spec: ModelSpec, cache_dir: Path) -> ModelHandle:
        """Load ``spec`` placed as this strategy wants it (on every rank)."""
        return load_model(spec, self.rank_device(), cache_dir, self.placement(spec, cache_dir))

    def rank_device(self) -> str:
        return self.device

    def describe(self) -> str:
        return f"strategy={self.name} rank {self.rank}/{self.world_size}"

    def teardown(self) -> None:
        """Leave the process group (so the process exits cleanly)."""


class DeviceMapStrategy(Strategy):
    """One process; accelerate places the layers over this machine's GPUs, then CPU, then disk."""

    def placement(self, spec: ModelSpec, cache_dir: Path) -> Placement:
        c = self.config
        folder = c.offload_folder or str(Path(cache_dir) / "offload" / spec.name)
        memory = {(int(k) if str(k).isdigit() else k): v for k, v in (c.max_memory or {}).items()} or None
        return Placement(device_map=c.device_map, max_memory=memory, offload_folder=folder)


class FabricStrategy(Strategy):
    """``ddp`` and ``zero3``: N processes under Lightning Fabric."""

    def __init__(self, config: StrategyConfig, device: str = "auto") -> None:
        super().__init__(config, device)
        self.fabric = None
        self.engine = None

    def _accelerator(self) -> str:
        acc = self.config.accelerator
        if acc == "auto":
            dev = self.device if self.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu")
            acc = "cuda" if str(dev).startswith("cuda") else "cpu"
        return "cuda" if acc == "gpu" else acc

    def _backend(self) -> str:
        if self.config.backend != "auto":
            return self.config.backend
        return "nccl" if self._accelerator() == "cuda" else "gloo"

    def _devices(self) -> int | str:
        if self.config.devices != "auto":
            return self.config.devices
        if "LOCAL_WORLD_SIZE" in os.environ:  # torchrun: as many as it started on this node
            return int(os.environ["LOCAL_WORLD_SIZE"])
        if "SLURM_NTASKS_PER_NODE" in os.environ:
            return int(os.environ["SLURM_NTASKS_PER_NODE"].split("(")[0])
        return "auto" if self._accelerator() == "cuda" else 1

    def _fabric_strategy(self):
        from lightning.fabric.strategies import DDPStrategy

        return DDPStrategy(process_group_backend=self._backend())

    def _precision(self) -> str:
        return "32-true"

    def launch(self) -> Strategy:
        from lightning.fabric import Fabric

        self.fabric = Fabric(accelerator=self._accelerator(), devices=self._devices(), num_nodes=self.config.num_nodes,
                             strategy=self._fabric_strategy(), precision=self._precision())
        self.fabric.launch()
        log.info("%s: rank %d of %d, device %s, backend %s", self.name, self.rank, self.world_size,
                 self.fabric.device, self._backend())
        return self

    rank = property(lambda self: self.fabric.global_rank if self.fabric else 0)
    world_size = property(lambda self: self.fabric.world_size if self.fabric else 1)

    def rank_device(self) -> str:
        if self.fabric is None:
            return self.device
        dev = self.fabric.device
        return "cpu" if dev.type == "cpu" else str(dev)

    def barrier(self) -> None:
        if self.world_size > 1:
            self.fabric.barrier()

    def gather(self, obj: Any) -> list[Any] | None:
        if self.world_size == 1:
            return [obj]
        import torch.distributed as dist

        out = [None] * self.world_size if self.rank == 0 else None
        dist.gather_object(obj, out, dst=0)
        return out

    def broadcast(self, obj: Any) -> Any:
        if self.world_size == 1:
            return obj
        return self.fabric.broadcast(obj, src=0)

    def teardown(self) -> None:
        import torch.distributed as dist

        if dist.is_available() and dist.is_initialized():  # no barrier: after a failure on another rank it would hang
            dist.destroy_process_group()


class DDPStrategy(FabricStrategy):
    """Data parallel over prompts: every rank holds the whole model and measures its share of the prompts.

    No ``DistributedDataParallel`` wrapper: the methods compute per-prompt quantities locally (saliency's
    per-prompt gradients never go through ``.grad``), so there is nothing to all-reduce.
    """


class ZeRO3Strategy(FabricStrategy):
    """DeepSpeed ZeRO stage 3 through Fabric (CPU-capable); prompts split across ranks as in ``ddp``."""

    def _fabric_strategy(self):
        from medinterp.distributed.deepspeed_cpu import cpu_capable_deepspeed_strategy, prepare_deepspeed_import

        prepare_deepspeed_import(cpu=self._accelerator() == "cpu", build_shm_op=self.config.build_shm_op)
        self._ds_config = None  # filled per model in placement(); Fabric needs a config now
        return cpu_capable_deepspeed_strategy(config=self._config_for("float32"), process_group_backend=self._backend())

    def _config_for(self, dtype: str) -> dict:
        from medinterp.distributed.deepspeed_cpu import zero3_config

        c = self.config
        return zero3_config(dtype, c.offload_params, c.nvme_path, c.param_persistence_threshold)

    def placement(self, spec: ModelSpec, cache_dir: Path) -> Placement:
        config = self._config_for(spec.dtype)
        self.fabric.strategy.config.update(config)  # the engine and the loader must agree
        return Placement(zero3_config=self.fabric.strategy.config)

    def teardown(self) -> None:
        """Wait for and release ZeRO-3's gathered parameters, then destroy the process group.

        ZeRO-3 prefetches the next modules' parameters with asynchronous all-gathers, and a forward that ends early
        (capture's StopForward, skipped blocks) can leave some in flight. A rank of a zero3 run once died at exit
        with SIGABRT ("terminate called without an active exception") after its results were written (CI,
        2026-12-06, not reproduced in 15 reruns); the likely cause is such work finishing in gloo's worker thread
        during interpreter shutdown, when it can no longer take the GIL. ``empty_partition_cache`` waits for every
        in-flight gather (no new collective) and re-partitions, while Python is still whole."""
        engine = getattr(self, "engine", None)
        if engine is not None:
            try:
                engine.empty_partition_cache()
            except Exception as err:  # noqa: BLE001 (at exit, after a failure elsewhere: still destroy the group)
                log.warning("zero3: releasing the gathered parameters at exit failed (%s: %s)", type(err).__name__, err)
        super().teardown()

    def load(self, spec: ModelSpec, cache_dir: Path) -> ModelHandle:
        handle = super().load(spec, cache_dir)
        for p in handle.model.parameters():  # nothing here trains; the engine must not build gradient buckets
            p.requires_grad_(False)
        self.engine = self.fabric.strategy.setup_module(handle.model)  # registers ZeRO-3's gather hooks
        handle.keepalive.append(self.engine)
        return handle


def make_strategy(config: StrategyConfig | dict[str, Any] | None = None, device: str = "auto") -> Strategy:
    """The strategy for ``config`` (a :class:`StrategyConfig` or its dict; None = ``single``), not yet launched."""
    if config is None:
        config = StrategyConfig()
    elif isinstance(config, dict):
        config = StrategyConfig.from_dict(config)
    if config.name == "single":
        resolve_device(device)  # fail early on a bad device
    cls = {"single": Strategy, "device_map": DeviceMapStrategy, "ddp": DDPStrategy, "zero3": ZeRO3Strategy}[config.name]
    return cls(config, device)
