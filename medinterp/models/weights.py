"""Read a module's weights outside its forward pass, whatever holds them (one process, ZeRO-3, offload).

Inside a module's forward (and its forward hooks) its weights are always materialized. Outside, a
sharded or offloaded model holds only a placeholder:

- DeepSpeed ZeRO-3 partitions every parameter across ranks; outside the forward a parameter has shape
  (0,) and its real shape in ``ds_shape``. ``deepspeed.zero.GatheredParameters`` gathers it (a
  collective: every rank must enter the same ``full_weights`` blocks in the same order);
- accelerate's big-model placement (``device_map`` with CPU/disk offload) keeps offloaded weights on
  the ``meta`` device between forwards; the module's ``AlignDevicesHook`` loads them for a forward,
  and :func:`full_weights` calls the same hook around the block.

Methods call :func:`full_weights` where they read a weight outside a forward (the LM head rows in
patching, for instance), :func:`own_weights` for a copy of a small module's weights, and :func:`numel` /
:func:`shape` for sizes; they never ask which strategy runs.

"Inside the forward" does not include a forward hook registered after the strategy's own: ZeRO-3 registers
its release hook when the engine is built, so by the time a method's forward hook runs, the module's
weights are partitioned again (shape (0,)). A hook that needs them calls :func:`own_weights`.
"""
from __future__ import annotations

from collections.abc import Iterator
from contextlib import ExitStack, contextmanager

import torch
from torch import nn


def shape(param: torch.Tensor) -> torch.Size:
    """The full shape of ``param`` (its ``ds_shape`` when ZeRO-3 holds only a partition)."""
    return getattr(param, "ds_shape", None) or param.shape


def numel(param: torch.Tensor) -> int:
    """The full number of entries of ``param`` (``ds_numel`` under ZeRO-3)."""
    return int(getattr(param, "ds_numel", None) or param.numel())


def is_partitioned(module: nn.Module) -> bool:
    """True when some parameter of ``module`` is a ZeRO-3 partitioned parameter."""
    return any(hasattr(p, "ds_id") for p in module.parameters())


@contextmanager
def full_weights(*modules: nn.Module) -> Iterator[None]:
    """Make every parameter of ``modules`` whole and readable for the duration of the block (read-only).

    A no-op for ordinary models. Under ZeRO-3 a collective (all ranks, same order); under accelerate
    offload it loads the weights onto the execution device and puts them back afterwards.
    """
    params = [p for m in modules for p in m.parameters()]
    with ExitStack() as stack:
        if any(hasattr(p, "ds_id") for p in params):
            import deepspeed

            stack.enter_context(deepspeed.zero.GatheredParameters(params, modifier_rank=None))
        else:
            for module in modules:
                for sub in module.modules():
                    hook = getattr(sub, "_hf_hook", None)
                    for h in getattr(hook, "hooks", [hook]):  # a SequentialHook holds several
                        if getattr(h, "offload", False):
                            h.pre_forward(sub)
                            stack.callback(h.post_forward, sub, None)
        yield


def own_weights(module: nn.Module) -> dict[str, torch.Tensor]:
    """Detached copies of ``module``'s own parameters (not its children's), whole whatever holds them.

    Under ZeRO-3 this gathers them (a collective: every rank must call it for the same modules in the same
    order, e.g. from a forward hook, which every rank runs alike); under accelerate offload it loads them.
    Meant for small leaf modules (norms; a parent's children are gathered too, then dropped).
    """
    with full_weights(module):
        return {name: p.detach().clone() for name, p in module.named_parameters(recurse=False)}

