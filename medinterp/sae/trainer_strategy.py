"""The Lightning strategy an SAE trains under: DeepSpeed's ZeRO stages 1-2 also on the CPU, ZeRO-3 refused.

Lightning's ``DeepSpeedStrategy`` (Trainer) refuses any accelerator but CUDA. DeepSpeed itself runs ZeRO on the
CPU over gloo (``DS_ACCELERATOR=cpu``; medinterp/distributed/deepspeed_cpu.py does the same for Fabric), so on
the CPU a ``deepspeed*`` strategy name becomes the smallest subclass that lets the Trainer drive that path:
``setup_environment`` skips the CUDA check, ``setup_distributed`` the device-index check (CPU devices carry no
index), and ``root_device`` is ``cpu:<local rank>`` (DeepSpeed reads the index as the rank). On CUDA the name
goes to Lightning unchanged.

What ZeRO changes for an SAE (docs/sae.md, "Strategies"): stages 1-2 keep an fp32 master copy of every
parameter, partitioned over the ranks, and step that copy; the decoder-row renormalisation and the b_dec
initialisation therefore write the master copy too (master_weights.py), and the decoder-gradient projection
is a hook on the gradient itself (stage 2 keeps no ``.grad``). ZeRO-3 partitions the parameters themselves
between forwards, so rows cannot be renormalised in place: it is refused in one line (an SAE's weights and
Adam state fit one device: 2 m d floats, 5.6 GB for Gemma 3 27B at 131k latents).
"""
from __future__ import annotations

import torch

from medinterp.errors import MedinterpError


def _uses_cuda(accelerator) -> bool:
    if isinstance(accelerator, str):
        return accelerator in ("cuda", "gpu") or (accelerator == "auto" and torch.cuda.is_available())
    return type(accelerator).__name__ == "CUDAAccelerator"


def sae_strategy(strategy, accelerator):
    """``strategy`` as Lightning's Trainer should get it: a ``deepspeed*`` name on the CPU becomes a
    CPU-capable DeepSpeedStrategy with that name's settings; ZeRO-3 names stop in one line; anything else is
    returned unchanged."""
    if not isinstance(strategy, str) or not strategy.startswith("deepspeed"):
        return strategy
    from lightning.pytorch.strategies import StrategyRegistry

    if strategy not in StrategyRegistry:
        return strategy  # Lightning names the valid choices
    params = dict(StrategyRegistry[strategy]["init_params"])
    if params.get("stage", 2) == 3:
        valid = ", ".join(n for n in StrategyRegistry if n.startswith("deepspeed")
                          and StrategyRegistry[n]["init_params"].get("stage", 2) != 3)
        raise MedinterpError(f"SAE training cannot use {strategy!r}: ZeRO-3 partitions the decoder whose rows are "
                             f"renormalised every step; valid: auto, ddp, {valid}.")
    if _uses_cuda(accelerator):
        return strategy
    from medinterp.distributed.deepspeed_cpu import prepare_deepspeed_import

    prepare_deepspeed_import(cpu=True)
    return _cpu_deepspeed(**params)


def _cpu_deepspeed(**kwargs):
    """Lightning's (Trainer) ``DeepSpeedStrategy``, also on the CPU accelerator (see the module docstring)."""
    from lightning.fabric.utilities.seed import reset_seed
    from lightning.pytorch.accelerators import CPUAccelerator
    from lightning.pytorch.strategies import DDPStrategy, DeepSpeedStrategy

    class CPUCapableDeepSpeedStrategy(DeepSpeedStrategy):
        def setup_environment(self) -> None:
            if isinstance(self.accelerator, CPUAccelerator):
                DDPStrategy.setup_environment(self)  # setup_distributed() + the accelerator's device setup
            else:
                super().setup_environment()

        def setup_distributed(self) -> None:
            if not isinstance(self.accelerator, CPUAccelerator):
                return super().setup_distributed()
            reset_seed()
            self.set_world_ranks()
            self._init_deepspeed_distributed()

        @property
        def root_device(self) -> torch.device:
            if isinstance(self.accelerator, CPUAccelerator):
                return torch.device("cpu", self.local_rank)
            return super().root_device

    return CPUCapableDeepSpeedStrategy(**kwargs)


__all__ = ["sae_strategy"]
