"""Live W&B training curves of an SAE: a Lightning ``WandbLogger`` built from the runner's tracker settings.

The runners log a finished results folder to W&B afterwards (medinterp/tracking: config, tables, figures,
summary); an SAE's training curves are step series, so they go to W&B while training runs, in a run of their
own (job_type ``sae-train``, same group and project as the results run, name ``<name>-train``). Every key that
lightning_module.py logs per step is a curve over ``trainer/global_step``: ``train/loss``,
``train/mse_g{i}`` (one per Matryoshka prefix), ``train/auxk``, ``train/k``, ``train/l0``, ``train/dead_fraction``,
``train/fvu``, ``train/threshold`` (BatchTopK).

The mode follows the other runners (tracking/settings.py ``resolve_mode``): ``$WANDB_MODE``, else online with
``$WANDB_API_KEY``, else offline — an offline run is written under ``<save_dir>/wandb/`` (``wandb sync`` it
later). The config logged is redacted of secrets (medinterp/secrets.py).
"""
from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from medinterp.secrets import argv_has_secret, redact
from medinterp.tracking.settings import TrackerSettings, resolve_mode

JOB_TYPE = "sae-train"


def training_wandb_logger(settings: TrackerSettings, save_dir: str | Path, *, name: str, group: str | None,
                          config: Mapping[str, Any]):
    """A ``lightning.pytorch.loggers.WandbLogger`` for the SAE's training curves, or None when tracking is off
    (``logger=none`` or mode ``disabled``). ``save_dir`` holds the offline run unless ``settings.dir`` is set.
    Call ``.experiment.finish()`` after training (the results run opens afterwards)."""
    if not settings.enabled:
        return None
    import sys

    import wandb
    from lightning.pytorch.loggers import WandbLogger

    return WandbLogger(
        name=f"{name}-train", project=settings.project, entity=settings.entity, group=settings.group or group,
        job_type=JOB_TYPE, tags=list(settings.tags), save_dir=str(settings.dir or save_dir),
        mode=resolve_mode(settings.mode), config=redact(dict(config)),
        settings=wandb.Settings(silent=True, console="off", x_disable_stats=True, save_code=False,
                                init_timeout=float(settings.init_timeout),
                                x_disable_meta=argv_has_secret(sys.argv[1:])))


__all__ = ["JOB_TYPE", "training_wandb_logger"]
