"""Which side a tokenizer pads on, for the duration of a block."""
from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any


@contextmanager
def padding_side(tokenizer: Any, side: str) -> Iterator[None]:
    """Temporarily set ``tokenizer.padding_side`` ("left": the last position is every row's last token, as
    generation and next-token probes need; "right": positions start at 0); restored in finally."""
    old = tokenizer.padding_side
    tokenizer.padding_side = side
    try:
        yield
    finally:
        tokenizer.padding_side = old
