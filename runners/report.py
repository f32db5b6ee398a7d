"""Self-contained HTML reports for results folders (seconds; reads only what the folders hold).

    python runners/report.py path=outputs/multirun/2025-01-01_12-00-00    # one report per result folder
    python runners/report.py path=outputs/runs/<run> kind=run

Writes <folder>/report.html into each result folder: a method run (per_layer.csv + summary.json), a
synthesis <model>/ folder (knowledge_map.json), a sweep summary (stability.* / robustness.*), a model
comparison (agreement.json + table1.csv) or a validity run (validity.json). See
docs/report.md.
"""
from __future__ import annotations

import logging
from pathlib import Path

from _common import log, user_errors

import hydra  # noqa: E402
from omegaconf import DictConfig  # noqa: E402

from medinterp.errors import MedinterpError  # noqa: E402
from medinterp.report import write_report, write_reports  # noqa: E402


def run_report(cfg: DictConfig) -> list[Path]:
    """Write the report(s) ``cfg.path`` asks for; return their paths."""
    if cfg.path is None:
        raise MedinterpError("path= is required: a run folder, a synthesis <model>/ folder, a sweep summary, atlas "
                             "or validity folder, or a folder of them")
    path = Path(str(cfg.path))
    written = write_reports(path) if cfg.kind == "auto" else [write_report(path, str(cfg.kind))]
    log.info("%d report(s) under %s", len(written), path)
    return written


@hydra.main(config_path="../conf", config_name="report", version_base="1.3")
@user_errors
def main(cfg: DictConfig) -> None:
    run_report(cfg)


if __name__ == "__main__":
    logging.getLogger("medinterp").setLevel(logging.INFO)
    main()
