"""DeepSpeed ZeRO-3 through Lightning Fabric, on GPUs and (for CI) on the CPU.

Lightning's ``DeepSpeedStrategy`` refuses any accelerator but CUDA ("only supported on CUDA GPUs").
DeepSpeed itself runs ZeRO-3 on the CPU over gloo (``DS_ACCELERATOR=cpu``), with results identical to
one process (docs/distributed.md). :class:`CPUCapableDeepSpeedStrategy` is the smallest subclass that
lets Fabric drive that path:

1. ``setup_environment`` skips the CUDA check and runs the DDP parent's setup (process group, ranks);
2. ``_setup_distributed`` skips the device-index validation (CPU devices carry no index);
3. ``root_device`` is ``cpu:<local rank>`` on the CPU accelerator (DeepSpeed takes the device index for
   the local rank and refuses ``None``).

On CUDA it behaves exactly like Lightning's strategy. :func:`prepare_deepspeed_import` must run before
``deepspeed`` is first imported: it selects DeepSpeed's CPU accelerator when no GPU is used, and
replaces DeepSpeed's shared-memory comm op build (a g++/ninja JIT compile of ~40 s that ZeRO-3 does not
use, and that crashes on machines without a compiler) by a no-op.
"""
from __future__ import annotations

import importlib
import logging
import os

import torch

log = logging.getLogger(__name__)


def prepare_deepspeed_import(cpu: bool, build_shm_op: bool = False) -> None:
    """Configure DeepSpeed for this process: CPU accelerator if ``cpu``; skip the shm op build unless asked."""
    if cpu:
        os.environ.setdefault("DS_ACCELERATOR", "cpu")
    os.environ.setdefault("DS_BUILD_OPS", "0")
    if not build_shm_op:
        # deepspeed.comm re-exports the function ``torch`` under that name, so reach the module by importlib.
        comm_torch = importlib.import_module("deepspeed.comm.torch")
        comm_torch.build_shm_op = lambda: None


def zero3_config(dtype: str, offload_params: str = "none", nvme_path: str = "/local_nvme",
                 param_persistence_threshold: int = 100_000, model_persistence_threshold: int | None = None,
                 prefetch_bucket_size: int | None = None) -> dict:
    """A DeepSpeed ZeRO stage-3 config for inference and gradient passes (no optimizer state).

    ``offload_params``: ``none`` | ``cpu`` | ``nvme`` (partitions live in host memory or on NVMe at
    ``nvme_path`` and are streamed to the device per layer). Parameters with at most
    ``param_persistence_threshold`` entries stay whole on every rank (norms, biases); tiny test models
    need 0, or nothing is sharded. ``model_persistence_threshold`` caps their total (default: no cap).
    """
    zero: dict = {"stage": 3, "stage3_param_persistence_threshold": int(param_persistence_threshold)}
    if model_persistence_threshold is not None:
        zero["stage3_model_persistence_threshold"] = int(model_persistence_threshold)
    elif param_persistence_threshold == 0:
        zero["stage3_model_persistence_threshold"] = 0
    if prefetch_bucket_size is not None:
        zero["stage3_prefetch_bucket_size"] = int(prefetch_bucket_size)
    if offload_params != "none":
        zero["offload_param"] = {"device": offload_params, "pin_memory": offload_params == "cpu" and torch.cuda.is_available()}
        if offload_params == "nvme":
            zero["offload_param"]["nvme_path"] = nvme_path
    return {
        "zero_optimization": zero,
        "bf16": {"enabled": dtype == "bfloat16"},
        "fp16": {"enabled": dtype == "float16"},
        "train_micro_batch_size_per_gpu": 1,
        "zero_allow_untested_optimizer": True,
        "wall_clock_breakdown": False,
    }


def cpu_capable_deepspeed_strategy(**kwargs):
    """A :class:`CPUCapableDeepSpeedStrategy` (built lazily: importing Lightning's strategy imports deepspeed)."""
    from lightning.fabric.accelerators import CPUAccelerator
    from lightning.fabric.strategies import DDPStrategy, DeepSpeedStrategy

    class CPUCapableDeepSpeedStrategy(DeepSpeedStrategy):
        """Lightning's ``DeepSpeedStrategy``, also on the CPU accelerator (see the module docstring)."""

        def setup_environment(self) -> None:
            if isinstance(self.accelerator, CPUAccelerator):
                DDPStrategy.setup_environment(self)  # accelerator setup + self._setup_distributed()
            else:
                super().setup_environment()

        def _setup_distributed(self) -> None:
            if not isinstance(self.accelerator, CPUAccelerator):
                return super()._setup_distributed()
            from lightning.fabric.utilities.seed import reset_seed

            reset_seed()
            self._set_world_ranks()
            self._init_deepspeed_distributed()
            if not self._config_initialized:
                self._format_config()
                self._config_initialized = True

        @property
        def root_device(self) -> torch.device:
            if isinstance(self.accelerator, CPUAccelerator):  # DeepSpeed reads the index as the local rank
                return torch.device("cpu", self.local_rank)
            return super().root_device

    return CPUCapableDeepSpeedStrategy(**kwargs)
