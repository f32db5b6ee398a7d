"""Tiny forward-hook context managers (in the manner of baukit's Trace/TraceDict).

- :func:`forward_hooks` registers plain ``torch`` forward hooks and always removes them in ``finally``,
  even when the forward raises, so no stray hook corrupts the next forward pass.
- :class:`StopForward` lets a hook end the forward pass early once the last needed layer has run
  (capturing layer 3 does not pay for layer 30, and never for the LM head); :func:`forward_hooks`
  swallows only that exception.
- :func:`output_tensor` unwraps a block's output, which is a tensor in transformers 5.x and a tuple
  ``(hidden, ...)`` in 4.x.

One engine serves capture, ablation and patching: each passes its own hook functions.
"""
from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import torch
from torch import nn

Hook = Callable[[nn.Module, tuple[Any, ...], Any], Any]


class StopForward(Exception):
    """Raised by a hook to stop the forward pass after the last module that is needed."""


def output_tensor(output: Any) -> torch.Tensor:
    """The hidden-state tensor of a module output (a tensor, or the first element of a tuple)."""
    return output[0] if isinstance(output, (tuple, list)) else output


@contextmanager
def forward_hooks(pairs: Sequence[tuple[nn.Module, Hook]]) -> Iterator[None]:
    """Register ``(module, hook)`` pairs for the duration of the block; a :class:`StopForward` ends it quietly."""
    handles = []
    try:
        for module, hook in pairs:
            handles.append(module.register_forward_hook(hook))
        yield
    except StopForward:
        pass
    finally:
        for handle in handles:
            handle.remove()
