"""Secret keys are dropped, secret values redacted, in configs, log lines, files and command lines."""
from __future__ import annotations

import pytest

from medinterp.secrets import (
    REDACTED,
    argv_has_secret,
    contains_secret,
    has_secret_key,
    is_secret_key,
    redact,
    scrub,
    secret_values,
)

KEY = "sk-live-0123456789abcdef"


@pytest.mark.parametrize("key", ["api_key", "OPENAI_API_KEY", "hf_token", "token", "Authorization", "password",
                                 "db-passwd", "client_secret", "apiKey", "accessToken", "aws_access_key_id",
                                 "private_key", "credentials"])
def test_secret_keys(key):
    assert is_secret_key(key)


@pytest.mark.parametrize("key", ["api_key_env", "max_tokens", "tokenizer", "n_tokens", "model", "keyword",
                                 "secretary_count", "base_url", "monkey"])
def test_ordinary_keys(key):
    assert not is_secret_key(key)


def test_secret_values_from_environment():
    env = {"OPENAI_API_KEY": KEY, "WANDB_API_KEY": "short", "MY_SERVICE_TOKEN": "t" * 12, "HOME": "/root" * 3,
           "HF_TOKEN": "h" * 30}
    # known names and secret-looking names count; values shorter than 8 characters and ordinary names do not
    assert secret_values(env) == ["h" * 30, KEY, "t" * 12]


def test_redact_drops_secret_keys_and_replaces_secret_values():
    config = {"judge": {"api_key": KEY, "api_key_env": "OPENAI_API_KEY", "max_tokens": 200,
                        "headers": [{"Authorization": f"Bearer {KEY}"}, "plain", f"Bearer {KEY}"]},
              "note": f"key was {KEY}", "n": 3, "ok": "fine", "nested": {"token": None}}
    assert redact(config, [KEY]) == {
        "judge": {"api_key_env": "OPENAI_API_KEY", "max_tokens": 200, "headers": [{}, "plain", REDACTED]},
        "note": REDACTED, "n": 3, "ok": "fine", "nested": {}}
    assert config["judge"]["api_key"] == KEY  # the input is not modified


def test_redact_reads_the_environment_by_default(monkeypatch):
    monkeypatch.setenv("WANDB_API_KEY", KEY)
    assert redact({"x": KEY, "y": [KEY + "suffix"]}) == {"x": REDACTED, "y": [REDACTED]}
    assert scrub(f"failed with {KEY}!") == f"failed with {REDACTED}!"


def test_contains_secret_and_argv():
    assert contains_secret(b"header " + KEY.encode() + b" tail", [KEY])
    assert not contains_secret(b"nothing here", [KEY])
    assert argv_has_secret(["domain=drugs", "judge.api_key=abc"], [])          # a secret-looking override
    assert argv_has_secret(["+judge.token=abc"], [])
    assert argv_has_secret(["domain=drugs", f"note={KEY}"], [KEY])             # a secret value anywhere
    assert not argv_has_secret(["domain=drugs", "judge.api_key_env=MY_KEY", "judge.max_tokens=5"], [KEY])


def test_has_secret_key():
    assert has_secret_key({"a": [{"b": {"password": "hunter2"}}]})
    assert not has_secret_key({"a": [{"b": {"password": None, "token": "", "api_key_env": "X"}}], "max_tokens": 5})
