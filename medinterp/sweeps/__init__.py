"""Sweeps: many runs of one experiment → how stable its knowledge map is (docs/sweeps.md).

jobs           find_jobs (the runs of a multirun folder), varied_keys, settings_of
selection      what a map selects per domain × method (+ consensus), Jaccard, best layer, map agreement
stability      fraction of settings selecting each layer, overall and per varied key's value
robustness     best-layer spread and selection overlap across settings (the robustness experiment)
plot           stability_figure, robustness_figure
summary        summarize: the whole stage (tables, figures, the map at the default parameters)
wandb_source   fetch_sweep: a W&B sweep's runs → a local sweep folder (through a wandb.Api object)
objective      one number per run for optimising sweepers (best silhouette, map agreement)
"""
from __future__ import annotations

from medinterp.sweeps.jobs import Job, Setting, find_jobs, settings_of, varied_keys
from medinterp.sweeps.robustness import RobustnessRow
from medinterp.sweeps.selection import best_layer, jaccard, map_agreement, selected_layers
from medinterp.sweeps.stability import StabilityRow
from medinterp.sweeps.summary import summarize

# the functions stability() and robustness() stay in their modules (same names as the modules)
__all__ = ["Job", "Setting", "find_jobs", "settings_of", "varied_keys", "StabilityRow", "RobustnessRow", "best_layer",
           "jaccard", "map_agreement", "selected_layers", "summarize"]
