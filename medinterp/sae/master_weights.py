"""Write a parameter in place, master copy included: what in-place updates outside the optimizer need.

The SAE trainer changes two parameters outside Adam: b_dec (the geometric median, first step) and W_dec (rows
renormalised after every step). Under DeepSpeed ZeRO stages 1-2 the optimizer steps an fp32 master copy of each
parameter (partitioned over the ranks) and copies it back into the module after every step, so a write to the
module's tensor alone would be overwritten at the next step (the rows would drift off unit norm). DeepSpeed's
``safe_set_full_fp32_param`` writes the master partition; a parameter without one (single device, DDP) is
only written in place.
"""
from __future__ import annotations

import torch


@torch.no_grad()
def set_parameter_(param: torch.nn.Parameter, value: torch.Tensor) -> None:
    """param <- value (same shape), in the module and in DeepSpeed's fp32 master copy when there is one."""
    param.data.copy_(value)
    if hasattr(param, "_hp_mapping") or hasattr(param, "ds_id"):  # a ZeRO-managed parameter
        from deepspeed.utils import safe_set_full_fp32_param

        safe_set_full_fp32_param(param, value.to(torch.float32))


__all__ = ["set_parameter_"]
