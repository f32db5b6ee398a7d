"""Which blocks an intervention touches: a map lane's, depth-matched random draws, and fixed baselines.

A map selects read-outs; an intervention acts on decoder blocks (block ``b`` writes read-out ``b + 1``,
medinterp/methods/base.py). Everything here is in block indices ``0..n_layers-1``.

Depth matching (the control the validity score needs: Hase et al. 2023 and Wang & Veitch 2025 found that
edits at other locations can work as well, and depth alone explains much of a layer's effect): the blocks
are cut into ``n_bands`` equal bands of relative depth (band of block b = floor(b * n_bands / n_layers)); a
random draw takes, from every band, as many blocks as the selection has there, uniformly without
replacement among the band's blocks *outside* the selection. Where a band has too few blocks outside the
selection, the draw fills up from the band's selected blocks too, and :class:`Draws` says so in its note.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from math import comb, prod

import numpy as np

from medinterp.errors import MedinterpError
from medinterp.validation import is_int


def check_blocks(blocks: Sequence[int], n_layers: int, what: str = "layers") -> tuple[int, ...]:
    """``blocks`` as a sorted tuple of distinct block indices, or one line naming the bad ones."""
    values = [int(b) for b in blocks] if all(is_int(b) for b in blocks) else None
    if not values:
        raise MedinterpError(f"{what} must be a non-empty list of block indices 0..{n_layers - 1}; got {list(blocks)!r}")
    bad = [b for b in values if not 0 <= b < n_layers]
    if bad:
        raise MedinterpError(f"{what} {bad} out of range for a model with {n_layers} blocks; valid: 0..{n_layers - 1}")
    return tuple(sorted(set(values)))


def depth_bands(n_layers: int, n_bands: int) -> np.ndarray:
    """(n_layers,) band index of every block: floor(b * n_bands / n_layers), bands 0..n_bands-1."""
    if not is_int(n_bands) or not 1 <= n_bands <= n_layers:
        raise MedinterpError(f"n_bands must be an int in 1..{n_layers} (the model's blocks); got {n_bands!r}")
    return (np.arange(n_layers) * n_bands) // n_layers


@dataclass(frozen=True)
class Draws:
    """Depth-matched random block sets: ``sets`` (each sorted), ``distinct`` (how many of them differ) and a
    ``note`` (empty, or why the draws are fewer or less clean than asked: a small band, few distinct sets)."""

    sets: tuple[tuple[int, ...], ...]
    distinct: int
    note: str = ""


def random_draws(selected: Sequence[int], n_layers: int, n_draws: int, seed: int, n_bands: int = 3) -> Draws:
    """``n_draws`` depth-matched random sets of ``len(selected)`` blocks (see the module docstring).

    Draws are distinct while distinct sets remain (at most ``n_draws`` tries x 50 attempts); when the
    bands allow fewer distinct sets than asked, every distinct set is drawn once more before any repeats,
    and the note says how many are distinct. Deterministic for a given ``seed``.
    """
    chosen = check_blocks(selected, n_layers, "selected layers")
    if not is_int(n_draws) or n_draws < 1:
        raise MedinterpError(f"n_draws must be an int >= 1; got {n_draws!r}")
    if len(chosen) >= n_layers:
        raise MedinterpError(f"selected layers cover all {n_layers} blocks: no other blocks to draw from")
    bands = depth_bands(n_layers, n_bands)
    rng = np.random.default_rng(seed)
    plan, short = [], []  # per band: (outside the selection, inside it, how many to take)
    for band in range(n_bands):
        inside = [b for b in chosen if bands[b] == band]
        outside = [b for b in range(n_layers) if bands[b] == band and b not in chosen]
        plan.append((outside, inside, len(inside)))
        if len(outside) < len(inside):
            short.append(band)
    possible = prod(comb(len(o), k) if len(o) >= k else comb(len(o) + len(i), k) for o, i, k in plan)
    seen: set[tuple[int, ...]] = set()
    sets: list[tuple[int, ...]] = []
    for _ in range(n_draws * 50):
        if len(sets) == n_draws:
            break
        draw: list[int] = []
        for outside, inside, k in plan:
            pool = outside if len(outside) >= k else outside + inside
            draw += rng.choice(pool, size=k, replace=False).tolist() if k else []
        key = tuple(sorted(int(b) for b in draw))
        if key in seen and len(seen) < possible:
            continue
        seen.add(key)
        sets.append(key)
    notes = []
    if short:
        notes.append(f"depth bands {short} have fewer unselected blocks than selected ones: draws there include "
                     f"selected blocks")
    if len(seen) < n_draws:
        notes.append(f"only {len(seen)} distinct depth-matched sets exist; {n_draws} draws repeat some")
    return Draws(tuple(sets), len(seen), "; ".join(notes))


def baselines(selected: Sequence[int], n_layers: int) -> dict[str, tuple[int, ...]]:
    """The fixed comparisons for a selection of N blocks: the first N, the last N and the complement (the
    blocks not selected; absent when the selection covers every block)."""
    chosen = check_blocks(selected, n_layers, "selected layers")
    n = len(chosen)
    out = {"first_n": tuple(range(n)), "last_n": tuple(range(n_layers - n, n_layers))}
    complement = tuple(b for b in range(n_layers) if b not in chosen)
    if complement:
        out["complement"] = complement
    return out
