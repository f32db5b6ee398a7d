"""The sweep configurations compose with the real conf/ (Hydra compose API, no subprocess)."""
from __future__ import annotations

import itertools

import pytest
import yaml
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from helpers import ROOT, runner
from medinterp.prompts import load_prompt_set

SWEEPS = ROOT / "sweeps"
RUNNER_CONFIG = {"runners/map.py": "map", "runners/synthesize.py": "synthesize", "runners/sae.py": "sae"}
DOMAINS = ("age", "symptoms", "disease", "progression", "drugs", "dosage")


def composed(config: str, overrides: list[str]):
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        return compose(config, overrides=[*overrides, f"hydra.searchpath=[file://{SWEEPS}]"], return_hydra_config=True)


def n_jobs(params) -> int:
    return len(list(itertools.product(*[str(v).split(",") for v in params.values()])))


@pytest.mark.parametrize("name, runner, jobs", [
    ("map_sigma_percentile", "synthesize", 50), ("map_segments", "synthesize", 12), ("map_consensus", "synthesize", 4),
    ("umap_params", "map", 24), ("bootstrap_seeds", "map", 9), ("models_domains", "map", 48),
])
def test_hydra_sweep_files_compose_with_their_runner(name, runner, jobs):
    cfg = composed(runner, [f"+sweep={name}", "runs=x"] if runner == "synthesize" else [f"+sweep={name}"])
    assert str(cfg.hydra.mode) == "RunMode.MULTIRUN"
    params = OmegaConf.to_container(cfg.hydra.sweeper.params)
    assert n_jobs(params) == jobs
    for key in params:  # every swept key exists in the composed config (a typo would be a new key or an error)
        assert key in ("model", "domain", "method") or OmegaConf.select(cfg, key) is not None, key
    if runner == "synthesize":
        assert cfg.plots is False and cfg.findings is False and cfg.hydra.output_subdir == ".hydra"
    else:
        subdir = OmegaConf.to_container(cfg.hydra.sweep)["subdir"]  # unresolved: HydraConfig is not set here
        # seeds / UMAP parameters repeat <model>-<domain>-<method>: the job number keeps the folders apart
        assert subdir.startswith("${hydra.job.num}_") or name == "models_domains", subdir


def test_umap_sweep_selects_the_umap_method():
    cfg = composed("map", ["+sweep=umap_params", "method.n_neighbors=30"])
    assert cfg.hydra.runtime.choices.method == "umap" and cfg.method.n_neighbors == 30


def test_sae_sweep_expands_to_expansion_k_lr_jobs_that_build_their_sae():
    """sweeps/sweep/sae_params.yaml: 3 x 3 x 3 jobs; each job's overrides reach the SAE and its TrainConfig."""
    from medinterp.sae import SAEConfig, TrainConfig

    cfg = composed("sae", ["+sweep=sae_params"])
    assert str(cfg.hydra.mode) == "RunMode.MULTIRUN"
    params = OmegaConf.to_container(cfg.hydra.sweeper.params)
    assert set(params) == {"sae.expansion", "sae.k", "sae.train.lr"} and n_jobs(params) == 27
    jobs = list(itertools.product(*[[f"{k}={v}" for v in str(vs).split(",")] for k, vs in params.items()]))
    for job in (jobs[0], jobs[-1]):
        one = composed("sae", ["+sweep=sae_params", *job])
        m = one.sae.expansion * 640  # Gemma-3-270M's d_model
        SAEConfig(640, m, one.sae.k, one.sae.activation)  # k <= m: a valid SAE
        assert TrainConfig(**one.sae.train).lr_for(m) == float(job[2].split("=")[1])
    assert [j[0] for j in (jobs[0], jobs[-1])] == ["sae.expansion=4", "sae.expansion=16"]


def test_robustness_template_ids_are_the_prompt_sets_in_file_order():
    ids = yaml.safe_load((ROOT / "conf" / "experiment" / "robustness.yaml").read_text())["robustness"]["ids"]
    assert sorted(ids) == sorted(DOMAINS)
    for domain in DOMAINS:
        templates = [t.id for t in load_prompt_set(domain).templates]
        expected = {f"t{i + 1}": [t] for i, t in enumerate(templates)}
        expected |= {f"loo{i + 1}": [u for u in templates if u != t] for i, t in enumerate(templates)}
        assert ids[domain] == expected, domain


@pytest.mark.parametrize("domain, template, expected", [("age", "t2", ["aged"]), ("dosage", "t3", ["discharge"]),
                                                        ("progression", "loo1", ["clinic_note", "follow_up", "assessment"])])
def test_robustness_experiment_resolves_one_template_set_per_job(domain, template, expected):
    cfg = composed("map", ["+experiment=robustness", f"domain={domain}", f"robustness.template={template}", "seed=2"])
    assert list(cfg.templates) == expected and cfg.method.seed == 2
    assert OmegaConf.to_container(cfg.hydra.sweeper.params) == {
        "method": "umap,patching", "domain": ",".join(DOMAINS), "robustness.template": "t1,t2,t3", "seed": "0,1,2",
        "robustness.center": "template,none"}
    assert n_jobs(cfg.hydra.sweeper.params) == 2 * 6 * 3 * 3 * 2


def method_settings(overrides: list[str]) -> dict:
    """The settings the chosen method runs with: runners/map.py's map_config (``per_method.<method>`` merged into
    ``method``) on the composed config, inside a Hydra run as the runner is."""
    from hydra.core.hydra_config import HydraConfig
    from omegaconf import open_dict

    cfg = composed("map", overrides)
    task = cfg.copy()
    with open_dict(task):
        del task["hydra"]
    HydraConfig.instance().set_config(cfg)
    try:
        return runner("_common").map_config(task)["method"]
    finally:
        HydraConfig.instance().cfg = None


def test_robustness_center_factor_sets_the_umap_methods_centring_and_leaves_patching_alone():
    assert method_settings(["method=umap"])["center"] == "template"  # outside the experiment: the default
    assert method_settings(["method=patching"])["pair_fraction"] == 1.0
    for center in ("template", "none"):
        assert method_settings(["+experiment=robustness", "domain=drugs", f"robustness.center={center}"])["center"] == center
    patching = method_settings(["+experiment=robustness", "method=patching", "robustness.center=none"])
    assert "center" not in patching and patching["pair_fraction"] == 0.8
    # the method confs read no experiment key: composed alone, they hold their own defaults
    assert composed("map", ["+experiment=robustness", "robustness.center=none"]).method.center == "template"


@pytest.mark.parametrize("name", ["map_grid", "umap_bayes", "sae_grid"])
def test_wandb_sweeps_hand_hydra_key_value_arguments(name):
    """What `wandb agent` runs (its own argument builder) composes with the program's Hydra config."""
    utils = pytest.importorskip("wandb.sdk.launch.sweeps.utils")
    sweep = yaml.safe_load((SWEEPS / "wandb" / f"{name}.yaml").read_text())
    assert sweep["command"] == ["${env}", "${interpreter}", "${program}", "${args_no_hyphens}"]
    assert sweep["method"] in ("grid", "bayes") and (ROOT / sweep["program"]).exists()
    point = {k: {"value": v.get("value", (v.get("values") or [v.get("min")])[0])} for k, v in sweep["parameters"].items()}
    args = utils.create_sweep_command_args({"args": point})["args_no_hyphens"]
    assert all("=" in a and not a.startswith("-") for a in args)
    cfg = composed(RUNNER_CONFIG[sweep["program"]], args)
    for key, value in point.items():
        got = cfg.hydra.runtime.choices[key] if key in ("model", "domain", "method") else OmegaConf.select(cfg, key)
        assert got == value["value"], key
    if sweep["method"] == "bayes":
        assert sweep["metric"]["goal"] == "maximize" and sweep["metric"]["name"].endswith("/silhouette_umap")
