"""Print the memory plan of a model under a strategy (parameters, bytes per rank per method, GPUs needed).

    python runners/plan.py model=llama33_70b strategy=zero3 devices=8
    python runners/plan.py model=hf model.path=/data/Llama-3.3-70B-Instruct strategy=device_map

Reads only the architecture (a local config.json, or the published numbers of the paper's models); no
weight is loaded. See medinterp/distributed/plan.py for what each number includes.
"""
from __future__ import annotations

import sys

from _common import check_group_choices, user_errors

import hydra  # noqa: E402
from omegaconf import DictConfig, OmegaConf  # noqa: E402

from medinterp.distributed.plan import Workload, plan  # noqa: E402


@hydra.main(config_path="../conf", config_name="plan", version_base="1.3")
@user_errors
def main(cfg: DictConfig) -> None:
    model = OmegaConf.to_container(cfg.model, resolve=True)
    workload = Workload(cfg.batch_size, cfg.tokens, cfg.answer_tokens, cfg.prompts, cfg.batch_tokens,
                        cfg.saliency.batch_tokens)
    print(plan(model, cfg.strategy.name, cfg.devices, float(cfg.gpu_gb), workload).table())


if __name__ == "__main__":
    user_errors(check_group_choices)(sys.argv[1:], ("model", "strategy"))
    main()
