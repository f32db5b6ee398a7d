"""Instrumenting a model's forward pass, in the manner of baukit's nethook: the one hooks module.

Contents, in the order a reader needs them:

- :func:`forward_hooks`: register ``(module, hook)`` pairs for a ``with`` block; every hook is removed
  in ``finally``, even when the forward raises, so no stray hook corrupts the next forward pass;
- :class:`StopForward` (*stop*): raised by a hook to end the forward pass once the last needed module
  has run (capturing layer 3 does not pay for layer 30, nor for the LM head); :func:`forward_hooks`
  swallows only that exception, so the caller sees no error;
- :func:`forward_pre_hooks`: the same for forward *pre*-hooks ``hook(module, args)``, which see (and may
  replace) a module's input, e.g. the MLP neurons entering a down projection (method ``neurons``);
- :func:`output_tensor`: the hidden states of a module output (a tensor, or the first element of a
  tuple, see :attr:`~medinterp.models.arch.base.BoundModel.block_returns_tuple`);
- :func:`record` (*record*): a hook that stores a module's output (optionally reduced) and may stop;
  :func:`record_input` the same for a module's input hidden states (a VLM's read-out 0: the input of block 0,
  after the image features were written over the placeholder embeddings);
- :func:`patch` (*patch*): a hook that replaces a module's output at some positions;
- :func:`add` (*add*): a hook that adds a vector to a module's output from some position on (steering,
  mean-ablation);
- :func:`record_update`: a hook that sums a block's update (output − input) over masked positions;
- :func:`identity_at`: a hook that makes a decoder block the identity at some positions only (its output
  there is its input; the other positions are computed as usual): a token-type-restricted lesion;
- :func:`replace_by_identity` (*replace-by-identity*): a decoder block returns its input and computes
  nothing, keeping a KV cache consistent with placeholder keys/values;
- :func:`skip_with_outputs` (*skip-with-cached-output*): the first blocks return outputs recorded in
  an earlier forward of the same inputs, without computing anything (prefix reuse).

The two block replacements swap the block's ``forward`` for an instance attribute, so ``__call__`` and
every module hook still run; the previous attribute (or none) is restored in ``finally``.
What a block returns and the KV cache's keyword are the adapter's data (medinterp/models/arch/), never
re-detected here.
"""
from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from typing import Any

import torch
from torch import nn

from medinterp.errors import MedinterpError
from medinterp.models.arch import BoundModel
from medinterp.validation import is_int

Hook = Callable[[nn.Module, tuple[Any, ...], Any], Any]


class StopForward(Exception):
    """Raised by a hook to stop the forward pass after the last module that is needed."""


def output_tensor(output: Any) -> torch.Tensor:
    """The hidden-state tensor of a module output (a tensor, or the first element of a tuple)."""
    return output[0] if isinstance(output, (tuple, list)) else output


@contextmanager
def _registered(register: Callable[[nn.Module, Any], Any], pairs: Sequence[tuple[nn.Module, Any]]) -> Iterator[None]:
    """``register(module, hook)`` for each pair for the duration of the block; every handle removed in ``finally``;
    a :class:`StopForward` ends the block quietly."""
    handles = []
    try:
        for module, hook in pairs:
            handles.append(register(module, hook))
        yield
    except StopForward:
        pass
    finally:
        for handle in handles:
            handle.remove()


def forward_hooks(pairs: Sequence[tuple[nn.Module, Hook]], prepend: bool = False) -> AbstractContextManager[None]:
    """Register ``(module, hook)`` pairs for the duration of the block; a :class:`StopForward` ends it quietly.
    A hook with a true ``with_kwargs`` attribute gets ``(module, args, kwargs, output)``. ``prepend``: the hooks run
    before the module's other forward hooks (ZeRO-3's, which re-wrap the output: medinterp/models/weights.py)."""
    return _registered(lambda m, h: m.register_forward_hook(h, with_kwargs=getattr(h, "with_kwargs", False),
                                                            prepend=prepend), pairs)


def forward_pre_hooks(pairs: Sequence[tuple[nn.Module, Callable[..., Any]]], with_kwargs: bool = False
                      ) -> AbstractContextManager[None]:
    """Register ``(module, pre_hook)`` pairs for the duration of the block (removed in ``finally``); a pre-hook
    ``hook(module, args)`` (``with_kwargs``: ``hook(module, args, kwargs)``, for inputs passed by keyword)
    returning a tuple replaces the module's positional inputs. A :class:`StopForward` ends the block quietly."""
    return _registered(lambda m, h: m.register_forward_pre_hook(h, with_kwargs=with_kwargs), pairs)


# --------------------------------------------------------------------------------------------------
# Hooks: record, patch, add
# --------------------------------------------------------------------------------------------------
def record(store: dict[Any, torch.Tensor], key: Any, reduce: Callable[[torch.Tensor], torch.Tensor] | None = None,
           stop: bool = False) -> Hook:
    """A forward hook that stores the module's output tensor (``reduce``-d, if given) in ``store[key]``.

    With ``stop`` it then raises :class:`StopForward`: nothing after this module runs.
    """
    def hook(_module, _inputs, output):
        hidden = output_tensor(output)
        store[key] = hidden if reduce is None else reduce(hidden)
        if stop:
            raise StopForward
    return hook


def record_input(store: dict[Any, torch.Tensor], key: Any,
                 reduce: Callable[[torch.Tensor], torch.Tensor] | None = None, stop: bool = False) -> Hook:
    """A forward hook (registered with keyword arguments) storing the module's input hidden states (its first
    positional argument, or ``hidden_states=``), ``reduce``-d if given, in ``store[key]``; ``stop`` as :func:`record`."""
    def hook(_module, args, kwargs, _output):
        hidden = args[0] if args else kwargs["hidden_states"]
        store[key] = hidden if reduce is None else reduce(hidden)
        if stop:
            raise StopForward
    hook.with_kwargs = True  # forward_hooks registers it with_kwargs
    return hook


def patch(source_BTD: torch.Tensor, mask_BT: torch.Tensor) -> Hook:
    """A forward hook that replaces the output at the ``mask_BT`` positions by ``source_BTD`` (a new tensor;
    a tuple output keeps its other elements)."""
    def hook(_module, _inputs, output):
        hidden = output_tensor(output)
        patched = torch.where(mask_BT.to(hidden.device)[..., None], source_BTD.to(hidden.device), hidden)
        return (patched, *output[1:]) if isinstance(output, (tuple, list)) else patched
    return hook


def patch_input(source_BTD: torch.Tensor, mask_BT: torch.Tensor) -> Callable[..., Any]:
    """A forward pre-hook (register with ``forward_pre_hooks(..., with_kwargs=True)``) that replaces the module's
    input hidden states (its first positional argument, or ``hidden_states=``) at the ``mask_BT`` positions by
    ``source_BTD``: :func:`patch` on a block's input (a VLM's read-out 0, written after the embedding module)."""
    def hook(_module, args, kwargs):
        hidden = args[0] if args else kwargs["hidden_states"]
        patched = torch.where(mask_BT.to(hidden.device)[..., None], source_BTD.to(hidden.device, hidden.dtype), hidden)
        return ((patched, *args[1:]), kwargs) if args else (args, {**kwargs, "hidden_states": patched})
    return hook


def add(vector_D: torch.Tensor, start: int = 0) -> Hook:
    """A forward hook that adds ``vector_D`` (D,) to the output at every position ``>= start`` of every row (a new
    tensor, in the output's dtype; a tuple output keeps its other elements). A zero vector leaves the output
    bit-identical (x + 0 = x)."""
    def hook(_module, _inputs, output):
        hidden = output_tensor(output)
        steered = hidden.clone()
        steered[:, start:] += vector_D.to(device=hidden.device, dtype=hidden.dtype)
        return (steered, *output[1:]) if isinstance(output, (tuple, list)) else steered
    return hook


def record_update(sums: dict[Any, torch.Tensor], key: Any, mask_BT: torch.Tensor) -> Hook:
    """A forward hook on a decoder block that adds Σ_t (output_t − input_t) over the ``mask_BT`` positions
    (float64, (D,)) to ``sums[key]``. The block's hidden-state input must be its first positional argument
    (as transformers calls decoder layers)."""
    def hook(module, inputs, output):
        if not inputs:
            raise MedinterpError(f"record_update: {type(module).__name__} got its hidden states as a keyword; "
                                 "expected them as the first positional argument")
        update = (output_tensor(output) - inputs[0]).double()  # (B, T, D)
        total = (update * mask_BT.to(update.device)[..., None]).sum((0, 1))
        sums[key] = sums[key] + total if key in sums else total
    return hook


def identity_at(mask_BT: torch.Tensor, tail: bool) -> Hook:
    """A forward hook (registered with keyword arguments) on a decoder block: its output equals its input at the
    ``mask_BT`` positions (B, W) and is the block's own elsewhere. The block still runs everywhere, so the other
    positions read this block's keys/values of every position (they depend only on the block's input, which the
    edit leaves alone); only the lesioned positions' updates are dropped.

    Positions beyond the mask's width ``W`` (answer tokens appended for teacher forcing, or generated) take
    ``tail``; a call shorter than ``W`` is a decoding step with a KV cache (its positions are all new) and takes
    ``tail`` everywhere. An all-True mask with ``tail=True`` gives the outputs of :func:`replace_by_identity`.
    """
    def hook(_module, args, kwargs, output):
        hidden_in, hidden = (args[0] if args else kwargs["hidden_states"]), output_tensor(output)
        B, T = hidden.shape[:2]
        W = mask_BT.shape[1]
        fill = torch.full((B, max(T - W, 0) if T >= W else T), tail, dtype=torch.bool, device=hidden.device)
        mask = torch.cat([mask_BT.to(hidden.device), fill], 1) if T >= W else fill  # (B, T)
        edited = torch.where(mask[..., None], hidden_in.to(hidden.dtype), hidden)
        return (edited, *output[1:]) if isinstance(output, (tuple, list)) else edited
    hook.with_kwargs = True  # forward_hooks registers it with_kwargs
    return hook


# --------------------------------------------------------------------------------------------------
# Block replacements: identity, cached output
# --------------------------------------------------------------------------------------------------
@contextmanager
def _swapped_forward(blocks: Sequence[nn.Module], forwards: Sequence[Callable[..., Any]]) -> Iterator[None]:
    """Make ``blocks[j].forward`` be ``forwards[j]`` (instance attributes) and restore what was there in ``finally``."""
    saved: list[tuple[nn.Module, Any]] = []
    try:
        for block, forward in zip(blocks, forwards):
            saved.append((block, block.__dict__.get("forward")))
            block.forward = forward
        yield
    finally:
        for block, previous in reversed(saved):
            if previous is None:
                block.__dict__.pop("forward", None)
            else:
                block.forward = previous


def _append_placeholder_kv(cache: Any, attn: nn.Module, hidden: torch.Tensor, block: int) -> None:
    """Append zero keys/values (B, n_kv_heads, T, head_dim) to the skipped block's layer of a KV cache.

    transformers passes the cache to every block and each attention module appends its own layer's
    keys/values; a skipped block would leave its layer empty, and the cache length (read from layer 0)
    and the masks would be wrong. The zeros keep every layer the same length and are never read (the
    block stays skipped for the whole forward or ``generate`` call).
    """
    config = getattr(attn, "config", None)
    head_dim = getattr(attn, "head_dim", None)
    if config is None or head_dim is None or not hasattr(cache, "update"):
        raise MedinterpError(f"replace_by_identity: cannot keep the KV cache consistent for block {block} "
                             f"({type(attn).__name__} has no config/head_dim); generate with use_cache=False")
    n_kv = getattr(config, "num_key_value_heads", None) or config.num_attention_heads
    shape = (hidden.shape[0], n_kv, hidden.shape[1], head_dim)
    cache.update(hidden.new_zeros(shape), hidden.new_zeros(shape), getattr(attn, "layer_idx", block))


@contextmanager
def replace_by_identity(parts: BoundModel, layer: int) -> Iterator[None]:
    """Replace decoder block ``layer`` by the identity for the duration of the ``with`` block.

    The block returns its input hidden states (the first positional argument, or ``hidden_states=``)
    without computing anything; module hooks still run. When a KV cache is passed (under
    ``parts.cache_kwarg``), zero keys/values are appended for this block's layer
    (:func:`_append_placeholder_kv`). A block that returns a tuple (``parts.block_returns_tuple``) gets
    ``(hidden,)``, plus ``None`` for the attention weights when ``output_attentions=True``.
    """
    n = len(parts.layers)
    if not is_int(layer) or not -n <= layer < n:
        raise MedinterpError(f"replace_by_identity: layer must be a block index in 0..{n - 1}; got {layer!r}")
    index, as_tuple, cache_kwarg = layer % n, parts.block_returns_tuple, parts.cache_kwarg

    def identity(*args: Any, **kwargs: Any):
        hidden = args[0] if args else kwargs["hidden_states"]
        cache = kwargs.get(cache_kwarg) if cache_kwarg else None
        if cache is not None:
            _append_placeholder_kv(cache, parts.attn(index), hidden, index)
        if not as_tuple:
            return hidden
        return (hidden, None) if kwargs.get("output_attentions") else (hidden,)

    with _swapped_forward([parts.layers[index]], [identity]):
        yield


@contextmanager
def skip_with_outputs(parts: BoundModel, outputs: Sequence[torch.Tensor]) -> Iterator[None]:
    """Make blocks ``0..len(outputs)-1`` return ``outputs[j]`` (hidden states) without computing anything.

    For prefix reuse: ``outputs`` are the blocks' outputs recorded (:func:`record`) in an earlier forward
    of the same inputs, so the forward is unchanged below the first computed block. The replacement
    ignores its arguments, so it works for any block signature; a block that returns a tuple
    (``parts.block_returns_tuple``) gets ``(output,)``.
    """
    wrap = parts.block_returns_tuple
    forwards = [(lambda value: lambda *args, **kwargs: value)((out,) if wrap else out) for out in outputs]
    with _swapped_forward(list(parts.layers)[:len(outputs)], forwards):
        yield


def start_at(parts: BoundModel, block: int, hidden: torch.Tensor) -> AbstractContextManager[None]:
    """Make a forward begin at block ``block`` with ``hidden`` (B, T, D) as the residual stream entering it.

    Blocks ``0..block-1`` return ``hidden`` without computing (:func:`skip_with_outputs`; each replaced block ignores
    its input, so only the last one's output is read); the embedding still runs, its output unused. For an
    intervention that leaves blocks below ``block`` unchanged, with ``hidden`` recorded from the intact model on the
    same inputs, the forward is the same as the full one at (n - block)/n of the cost.
    """
    return skip_with_outputs(parts, [hidden] * block)
