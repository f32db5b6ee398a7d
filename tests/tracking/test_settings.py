"""TrackerSettings validation, conf/logger/*.yaml, and the W&B mode rule."""
from __future__ import annotations

import pytest
import yaml
from helpers import ROOT

from medinterp.errors import MedinterpError
from medinterp.tracking import TrackerSettings, resolve_mode


@pytest.mark.parametrize("mode, env, expected", [
    (None, {}, "offline"),                                              # no key: offline, sync later
    (None, {"WANDB_API_KEY": "k" * 40}, "online"),                      # a key: online
    (None, {"WANDB_MODE": "offline", "WANDB_API_KEY": "k" * 40}, "offline"),  # $WANDB_MODE beats the key
    (None, {"WANDB_MODE": "disabled"}, "disabled"),
    (None, {"WANDB_MODE": "dryrun"}, "offline"),                        # W&B's own aliases
    (None, {"WANDB_MODE": "run", "WANDB_API_KEY": "k" * 40}, "online"),
    (None, {"WANDB_MODE": " Online "}, "online"),
    (None, {"WANDB_MODE": "", "WANDB_API_KEY": "k" * 40}, "online"),    # empty = unset
    ("offline", {"WANDB_API_KEY": "k" * 40}, "offline"),                # the setting beats everything
    ("online", {"WANDB_MODE": "offline"}, "online"),
    ("disabled", {"WANDB_MODE": "online"}, "disabled"),
])
def test_resolve_mode(mode, env, expected):
    assert resolve_mode(mode, env) == expected


def test_resolve_mode_reads_the_process_environment(monkeypatch):
    monkeypatch.delenv("WANDB_MODE", raising=False)
    monkeypatch.setenv("WANDB_API_KEY", "k" * 40)
    assert resolve_mode(None) == "online"
    monkeypatch.delenv("WANDB_API_KEY")
    assert resolve_mode(None) == "offline"


def test_bad_modes_name_the_valid_choices():
    with pytest.raises(MedinterpError, match=r"unknown WANDB_MODE 'sometimes'; valid: disabled, offline, online"):
        resolve_mode(None, {"WANDB_MODE": "sometimes"})
    with pytest.raises(MedinterpError, match=r"unknown logger mode 'shared'"):
        TrackerSettings(mode="shared")


def test_from_dict_validates():
    s = TrackerSettings.from_dict({"name": "wandb", "mode": "offline", "tags": ["a", "b"], "entity": "team"})
    assert (s.mode, s.tags, s.entity, s.enabled) == ("offline", ("a", "b"), "team", True)
    assert TrackerSettings.from_dict({"name": "wandb", "tags": None}).tags == ()
    assert not TrackerSettings.from_dict(None).enabled
    assert not TrackerSettings(mode="disabled").enabled
    with pytest.raises(MedinterpError, match=r"unknown logger setting 'projet'; valid: .*project"):
        TrackerSettings.from_dict({"projet": "x"})
    with pytest.raises(MedinterpError, match=r"unknown logger 'mlflow'; valid: none, wandb"):
        TrackerSettings.from_dict({"name": "mlflow"})
    with pytest.raises(MedinterpError, match="logger.tags must be a list of strings"):
        TrackerSettings(tags="a,b")
    for bad in (0, True, "30"):
        with pytest.raises(MedinterpError, match=rf"^logger.init_timeout must be a positive number of seconds; got {bad!r}$"):
            TrackerSettings(init_timeout=bad)


def test_conf_logger_files_build_valid_settings():
    wandb = TrackerSettings.from_dict(yaml.safe_load((ROOT / "conf/logger/wandb.yaml").read_text()))
    none = TrackerSettings.from_dict(yaml.safe_load((ROOT / "conf/logger/none.yaml").read_text()))
    assert wandb == TrackerSettings()  # the YAML states the library defaults, nothing else
    assert wandb.enabled and not none.enabled
