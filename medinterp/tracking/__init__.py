"""Experiment tracking: finished results folders replayed into Weights & Biases runs.

settings   TrackerSettings (conf/logger/*.yaml), resolve_mode (auto: $WANDB_MODE, else online with
           $WANDB_API_KEY, else offline)
(medinterp.secrets: redact, scrub, contains_secret — shared with the results writer)
tables     results files as plain tables: per_layer, best_layers, knowledge_map, flattened JSON, CSV
folder     read_folder: what a run / synthesis / summary folder logs (steps, summary, tables, images,
           artifacts), as plain data
wandb_log  log_run_folder: the W&B calls, failure-proof; writes <folder>/wandb_logged.json

The library never imports wandb at import time; ``logger=none`` never imports it at all.
See docs/tracking.md.
"""
from __future__ import annotations

from medinterp.tracking.folder import RECORD_NAME, Payload, read_folder
from medinterp.secrets import REDACTED, contains_secret, redact, scrub, secret_values
from medinterp.tracking.settings import TrackerSettings, resolve_mode
from medinterp.tracking.wandb_log import TrackedRun, log_run_folder

__all__ = ["TrackerSettings", "resolve_mode", "log_run_folder", "TrackedRun", "read_folder",
           "Payload", "RECORD_NAME", "redact", "scrub", "contains_secret", "secret_values", "REDACTED"]
