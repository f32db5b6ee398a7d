"""The ``tokens`` setting of the activation methods: which token type of a vision-language prompt they read.

On an image prompt set (``modality: image``) a method reads the residual stream pooled over one token type
(medinterp/capture/images.py): ``image`` (the image's grid tokens), ``text`` (the prompt's text tokens,
special tokens excluded) or ``all`` (both; the default, ``tokens: null``). On a text prompt set every token is
a text token: ``null``, ``text`` and ``all`` read it exactly as before (the run's ``reduction``), and
``image`` is refused in one line. The token type read is written in the results' ``tokens`` column
(docs/results-format.md): empty for text sets, so their tables are unchanged.
"""
from __future__ import annotations

from medinterp.capture.images import TOKEN_TYPES, check_tokens
from medinterp.errors import MedinterpError
from medinterp.prompts import PromptSet

MODALITIES = ("text", "image")  # what a method with a ``tokens`` setting reads (Method.modalities)


def check_token_setting(method: str, tokens: str | None) -> None:
    """One line when a method's ``tokens`` setting is neither null nor one of :data:`TOKEN_TYPES`."""
    if tokens is not None:
        try:
            check_tokens(tokens)
        except MedinterpError:
            raise MedinterpError(f"{method} method: tokens must be one of {', '.join(TOKEN_TYPES)} or null (image "
                                 f"sets: all); got {tokens!r}") from None


def token_type(method: str, tokens: str | None, prompt_set: PromptSet) -> str | None:
    """The token type ``method`` reads on ``prompt_set``: None for a text set (its ``reduction`` applies), else
    ``tokens`` (``all`` when null). ``tokens=image`` on a text set is one line naming the set."""
    check_token_setting(method, tokens)
    if prompt_set.modality != "image":
        if tokens == "image":
            raise MedinterpError(f"method={method} tokens=image needs an image prompt set; prompt set "
                                 f"{prompt_set.domain!r} is a text set (tokens: text, all or null read it)")
        return None
    return tokens or "all"
