"""Keep secrets out of everything a tracker sees: configs, table cells, file uploads and log lines.

Two rules, applied together:

- **By key.** A mapping key is secret when one of its words (split at ``_ - .`` and camelCase) is
  ``token``, ``secret``, ``password``, ``passwd``, ``authorization``, ``credential(s)`` or ``apikey``,
  or two adjacent words are ``api key``, ``access key`` or ``private key``. Such keys are dropped.
  A key ending in ``_env`` (``api_key_env: OPENAI_API_KEY``) names an environment variable, not a
  value, and is kept; ``max_tokens`` is kept because ``tokens`` is not ``token``.
- **By value.** The values of secret environment variables (:data:`SECRET_ENV`, plus any variable
  whose *name* is secret by the rule above) are looked up at call time; any string equal to or
  containing one becomes ``"<redacted>"``. Values shorter than :data:`MIN_SECRET_LEN` are ignored, so
  ``WANDB_API_KEY=1`` cannot redact every ``1`` in a config.

:func:`contains_secret` checks raw bytes (a file about to be uploaded) for the same values and
:func:`has_secret_key` parsed JSON for secret keys that hold a value;
:func:`argv_has_secret` checks a command line (W&B records ``sys.argv`` in its run metadata).
"""
from __future__ import annotations

import os
import re
from collections.abc import Iterable, Mapping
from typing import Any

REDACTED = "<redacted>"
# Always treated as secret, whatever the name rule says.
SECRET_ENV = ("OPENAI_API_KEY", "WANDB_API_KEY", "HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "ANTHROPIC_API_KEY")
MIN_SECRET_LEN = 8  # shorter environment values are not treated as secrets (they would redact noise)

_SECRET_WORDS = {"token", "secret", "secrets", "password", "passwd", "authorization", "credential",
                 "credentials", "apikey"}
_SECRET_PAIRS = {("api", "key"), ("access", "key"), ("private", "key")}  # api_key, apiKey, aws_access_key_id
_WORD_SPLIT = re.compile(r"[_\-.\s]+|(?<=[a-z0-9])(?=[A-Z])")


def is_secret_key(key: object) -> bool:
    """True when a mapping key looks like it holds a secret (see the module docstring)."""
    text = str(key)
    if text.lower().endswith("_env"):  # names the variable that holds the secret, never the secret itself
        return False
    words = [w.lower() for w in _WORD_SPLIT.split(text) if w]
    return any(w in _SECRET_WORDS for w in words) or any(pair in _SECRET_PAIRS for pair in zip(words, words[1:]))


def secret_values(environ: Mapping[str, str] | None = None) -> list[str]:
    """The values of secret environment variables (longest first, so a longer one is replaced first)."""
    env = os.environ if environ is None else environ
    names = set(SECRET_ENV) | {name for name in env if is_secret_key(name)}
    values = {env[n] for n in names if n in env and len(env[n]) >= MIN_SECRET_LEN}
    return sorted(values, key=len, reverse=True)


def scrub(text: str, secrets: Iterable[str] | None = None, marker: str = REDACTED) -> str:
    """``text`` with every secret value replaced by ``marker`` (for log lines, messages and report pages)."""
    for value in secret_values() if secrets is None else secrets:
        text = text.replace(value, marker)
    return text


def redact(obj: Any, secrets: Iterable[str] | None = None) -> Any:
    """A copy of a config-like object (mappings, lists, scalars) with secret keys dropped and any string
    equal to or containing a secret value replaced by ``<redacted>``."""
    secrets = secret_values() if secrets is None else list(secrets)

    def walk(value: Any) -> Any:
        if isinstance(value, Mapping):
            return {k: walk(v) for k, v in value.items() if not is_secret_key(k)}
        if isinstance(value, (list, tuple)):
            return [walk(v) for v in value]
        if isinstance(value, str) and any(s in value for s in secrets):
            return REDACTED
        return value

    return walk(obj)


def has_secret_key(obj: Any) -> bool:
    """True when a mapping anywhere in ``obj`` has a secret-looking key holding a value (not None/empty)."""
    if isinstance(obj, Mapping):
        return any((is_secret_key(k) and v not in (None, "", {}, [])) or has_secret_key(v) for k, v in obj.items())
    if isinstance(obj, (list, tuple)):
        return any(has_secret_key(v) for v in obj)
    return False


def argv_has_secret(argv: Iterable[str], secrets: Iterable[str] | None = None) -> bool:
    """True when a command-line argument sets a secret-looking key (``judge.api_key=...``) or contains a
    secret value. W&B records ``sys.argv`` in its run metadata, so such a run must not record it."""
    secrets = secret_values() if secrets is None else list(secrets)
    for arg in argv:
        key, sep, _ = arg.partition("=")
        if (sep and is_secret_key(key.lstrip("+~-").rsplit(".", 1)[-1])) or any(s in arg for s in secrets):
            return True
    return False


def contains_secret(data: bytes, secrets: Iterable[str] | None = None) -> bool:
    """True when ``data`` contains the value of a secret environment variable."""
    return any(s.encode() in data for s in (secret_values() if secrets is None else secrets))
