"""What a judge sees and says, and the judge registry (keys = ``conf/judge/<key>.yaml``).

A judge rates how much a lesioned model's answer departs from the intact model's answer, from 1 (no
change) to 10 (gibberish). The ablation method (``medinterp/methods/ablation/``) builds one
:class:`JudgeItem` per (prompt, ablated block) and calls :meth:`Judge.score` once with all of them.

- :class:`JudgeItem`: the prompt, the intact answer, the lesioned answer (``None`` when the judge does
  not need text) and the deterministic metrics KL and Δlog p of that prompt;
- :class:`Verdict`: a score in 1..10, or ``score=None`` with ``missing_reason`` (an item that failed);
  ``asked=False`` marks a score given without asking the judge (identical answers), which the ablation
  method does not count as the judge's evidence (its ``judge_coverage``);
- :class:`Judge`: the protocol (``name``, ``needs_text``, ``score(items)``); judges are also context
  managers, so a runner can keep a judge's resources (the local server) up across several cells;
- :func:`register_judge`, :func:`judge_class`, :func:`make_judge`: the registry.
"""
from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from medinterp.errors import MedinterpError
from medinterp.registry import Registry

SCORE_MIN, SCORE_MAX = 1, 10  # the paper's scale: 1 = unchanged, 10 = gibberish


@dataclass(frozen=True)
class JudgeItem:
    """One (prompt, ablated block) to score."""

    prompt: str
    clean_answer: str
    ablated_answer: str | None  # None when the judge does not need text (the deterministic judge)
    kl: float  # mean KL(intact ‖ lesioned) over the intact answer's tokens, nats
    dlogp: float  # mean log p_intact(answer) − log p_lesioned(answer) per token, nats


@dataclass(frozen=True)
class Verdict:
    """A judge's answer for one item: a score in 1..10, or ``score=None`` and the reason it is missing."""

    score: float | None
    rationale: str = ""
    missing_reason: str | None = None
    cached: bool = False  # True when it came from the on-disk cache (no request was made)
    asked: bool = True  # False when settled without the judge (identical answers score 1 unsent)

    @property
    def missing(self) -> bool:
        return self.score is None

    @property
    def value(self) -> float:
        """The score as a float, NaN when missing (for arrays)."""
        return math.nan if self.score is None else float(self.score)


@runtime_checkable
class Judge(Protocol):
    """Scores :class:`JudgeItem` s; ``needs_text`` says whether the lesioned model must generate."""

    name: str
    needs_text: bool

    def score(self, items: Sequence[JudgeItem]) -> list[Verdict]: ...

    def __enter__(self) -> Judge: ...

    def __exit__(self, *exc: object) -> None: ...


class JudgeContext:
    """Mixin: a judge that holds no resources is a no-op context manager."""

    def __enter__(self):
        return self

    def __exit__(self, *exc: object) -> None:
        return None


_JUDGES = Registry("judge")
register_judge = _JUDGES.register  # class decorator; the conf file is conf/judge/<name>.yaml
judge_class = _JUDGES.get
registered_judges = _JUDGES.names


def make_judge(name: str, settings: Mapping[str, Any] | None = None, cache_dir: str | Path | None = None) -> Judge:
    """Build judge ``name`` from its settings (the contents of ``conf/judge/<name>.yaml``).

    ``cache_dir`` is the medinterp cache root; judges that cache answers put them under
    ``<cache_dir>/judge/``. An unknown setting is a one-line error naming the valid ones.
    """
    cls = judge_class(name)
    kwargs = dict(settings or {})
    kwargs.pop("name", None)  # tolerated: the file may repeat its own key
    valid = set(getattr(cls, "__dataclass_fields__", {}))
    unknown = sorted(set(kwargs) - valid)
    if unknown:
        raise MedinterpError(f"judge {name!r}: unknown setting(s) {unknown}; valid: {', '.join(sorted(valid))}")
    if "cache_dir" in valid and kwargs.get("cache_dir") is None and cache_dir is not None:
        kwargs["cache_dir"] = str(cache_dir)
    return cls(**kwargs)
