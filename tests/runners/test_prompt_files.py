"""Own prompt sets on the command line: ``domain=<path>`` (multirun too), one folder per job named by the prompt
set's own ``domain`` key, and the README's example files and commands (on a tiny model: real subprocesses, ``slow``;
the README's commands and the one-line errors also in this process, in the fast tier)."""
from __future__ import annotations

import csv
import json
import re
import shlex

import pytest
import yaml

from helpers import ROOT, run_cell_in_process, run_runner, runner
from medinterp.errors import MedinterpError
from medinterp.prompts import load_prompt_set

EXAMPLES = ("organs", "heart_rate", "dose_pairs")
QUIET = ["model=tiny_llama", "report=false", "plots=false"]
FAST = {"umap": ["method.n_boot=20", "method.n_perm=3", "method.n_jobs=1"],
        "patching": ["method.min_gap=0", "method.n_boot=20"]}  # tiny random models have gaps well below 1

# pairs that align token by token in SmolLM2's tokenizer (the tiny models use it): from the packaged dosage set
PAIRS = [("apixaban", "edoxaban", " twice", " once"), ("dabigatran", "levothyroxine", " twice", " once"),
         ("gabapentin", "pregabalin", " three", " twice"), ("sertraline", "gabapentin", " once", " three"),
         ("cephalexin", "carvedilol", " four", " twice"), ("sitagliptin", "ticagrelor", " once", " twice"),
         ("alendronate", "lisinopril", " week", " day"), ("risedronate", "liraglutide", " week", " day")]


def read_csv(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def pairs_file(path, pairs):
    """A patching-only prompt set (its domain key is the file's stem) with these (clean, corrupted) drug pairs."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tail = lambda answer: " once a" if answer in (" week", " day") else ""  # noqa: E731
    data = {"domain": path.stem, "version": "1.0.0", "description": "test pairs", "sources": [{"system": "test"}],
            "pairs": [{"id": f"{a}_vs_{b}", "clean": f"The standard adult dose of {a} is taken{tail(ca)}",
                       "corrupted": f"The standard adult dose of {b} is taken{tail(ca)}", "clean_answer": ca,
                       "corrupted_answer": xa, "provenance": {"system": "test", "code": a}} for a, b, ca, xa in pairs]}
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def p_values(folder):
    return [float(r["value"]) for r in read_csv(folder / "per_layer.csv") if r["metric"].startswith("p_")]


@pytest.mark.slow
def test_a_multirun_over_files_gives_one_folder_per_file_named_by_its_domain(tmp_path):
    """Relative and absolute paths, two files with the same domain key, and a packaged name, in one multirun."""
    a = pairs_file(tmp_path / "a.yaml", PAIRS[0:2])
    pairs_file(tmp_path / "sub" / "b.yaml", PAIRS[2:4])
    c = pairs_file(tmp_path / "elsewhere" / "c.yaml", PAIRS[4:6])
    pairs_file(tmp_path / "other" / "a.yaml", PAIRS[6:8])  # the same domain key 'a' as ./a.yaml
    sweep = tmp_path / "sweep"
    run_runner("map.py", "-m", f"domain=a.yaml,sub/b.yaml,{c},other/a.yaml,dosage", "method=patching", "logger=none",
               f"hydra.sweep.dir={sweep}", *QUIET, *FAST["patching"], cwd=tmp_path)
    folders = sorted(p.name for p in sweep.iterdir() if (p / "per_layer.csv").exists())
    assert folders == ["0_tiny_llama-a-patching", "1_tiny_llama-b-patching", "2_tiny_llama-c-patching",
                       "3_tiny_llama-a-patching", "4_tiny_llama-dosage-patching"]
    tables = [p_values(sweep / f) for f in folders]
    assert all(tables) and len({tuple(t) for t in tables}) == 5  # five different tables, none replaced
    for folder, domain in zip(folders, ("a", "b", "c", "a", "dosage")):
        assert {r["domain"] for r in read_csv(sweep / folder / "per_layer.csv")} == {domain}
        assert {r["domain"] for r in read_csv(sweep / folder / "per_item.csv")} == {domain}
    config = yaml.safe_load((sweep / folders[0] / ".hydra" / "config.yaml").read_text())
    assert config["domain"]["prompt_set"] == str(a)  # the relative path, resolved against the current directory
    ids = {r["item"] for r in read_csv(sweep / folders[3] / "per_item.csv")}
    assert ids == {"alendronate_vs_lisinopril", "risedronate_vs_liraglutide"}


@pytest.mark.slow
def test_the_older_form_names_folders_and_wandb_runs_by_the_files_domain(tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_DATA_DIR", str(tmp_path / "wandb-data"))
    a, b = pairs_file(tmp_path / "first.yaml", PAIRS[0:2]), pairs_file(tmp_path / "second.yaml", PAIRS[2:4])
    sweep = tmp_path / "sweep"
    run_runner("map.py", "-m", f"domain.prompt_set={a},{b}", "method=patching", f"hydra.sweep.dir={sweep}", *QUIET,
               *FAST["patching"])
    for folder, domain in (("0_tiny_llama-first-patching", "first"), ("1_tiny_llama-second-patching", "second")):
        logged = json.loads((sweep / folder / "wandb_logged.json").read_text())
        assert logged["name"] == f"tiny_llama-{domain}-patching"


def bad_files(tmp_path):
    pairs = pairs_file(tmp_path / "only_pairs.yaml", PAIRS[0:2])
    return (([f"domain={pairs}", "method=umap"], f"error: {pairs}: prompt set 'only_pairs' has only "
             "contrast pairs (no items, templates or labelings); method=umap needs labelled items"),
            (["domain=missing/set.yaml"], f"error: domain=missing/set.yaml: prompt set file not found: "
             f"{tmp_path}/missing/set.yaml"),
            (["-m", "domain=drugs,nerves"], "error: unknown domain 'nerves'; valid: age, control, disease, dosage, "
             "drugs, progression, symptoms, synthetic_xray; or a path to a prompt-set .yaml file"))


@pytest.mark.slow
def test_a_patching_only_file_with_another_method_and_a_missing_path_are_one_line(tmp_path):
    for args, message in bad_files(tmp_path):
        proc = run_runner("map.py", *args, "logger=none", f"hydra.run.dir={tmp_path}/r", f"hydra.sweep.dir={tmp_path}/s",
                          *QUIET, cwd=tmp_path, check=False)
        errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
        assert proc.returncode == 2 and len(errors) == 1 and errors[0].startswith(message), proc.stderr[-2000:]
        assert "Traceback" not in proc.stderr


def test_a_patching_only_file_with_another_method_and_a_missing_path_are_one_error_in_process(tmp_path, monkeypatch):
    """The errors of the test above, met in this process (the CLI's check of the domain choice, then the cell)."""
    monkeypatch.chdir(tmp_path)
    for args, message in bad_files(tmp_path):
        argv = [a for a in args if a != "-m"]
        with pytest.raises(MedinterpError) as err:
            runner("_common").check_group_choices(argv, ("domain",))
            run_cell_in_process([*argv, *QUIET], tmp_path / "r")
        assert str(err.value).startswith(message.removeprefix("error: ")) and "\n" not in str(err.value)


# ------------------------------------------------------------------------------------------------ README
def readme_section() -> str:
    text = (ROOT / "README.md").read_text()
    start = text.index("## Bring your own prompts")
    return text[start:text.index("\n## ", start + 1)]


def readme_commands() -> list[list[str]]:
    """The map commands of the README's section, as argument lists after ``runners/map.py``."""
    block = re.search(r"```bash\n(.*?)```", readme_section(), re.S).group(1)
    return [shlex.split(line)[2:] for line in block.splitlines() if "runners/map.py" in line]


def test_the_readme_shows_the_example_files_verbatim_and_each_loads():
    blocks = re.findall(r"```yaml\n(.*?)```", readme_section(), re.S)
    assert blocks == [(ROOT / "docs" / "examples" / f"{name}.yaml").read_text() for name in EXAMPLES]
    for name in EXAMPLES:
        ps = load_prompt_set(ROOT / "docs" / "examples" / f"{name}.yaml")
        assert ps.domain == name and (ps.items or ps.pairs)
    commands = readme_commands()
    assert {a for cmd in commands for a in cmd if a.startswith("domain=")} >= {
        f"domain=docs/examples/{name}.yaml" for name in EXAMPLES}


@pytest.mark.parametrize("name", EXAMPLES)
def test_the_readme_command_maps_each_example_on_a_tiny_model(tmp_path, name, map_cell, monkeypatch):
    args = next(cmd for cmd in readme_commands() if f"domain=docs/examples/{name}.yaml" in cmd and "-m" not in cmd)
    method = next((a.split("=", 1)[1] for a in args if a.startswith("method=")), "umap")
    monkeypatch.chdir(ROOT)  # the README's paths are relative to the repository
    out = map_cell([*args, "logger=none", *QUIET, *FAST[method]], tmp_path / "run")
    rows = read_csv(out / "per_layer.csv")
    assert rows and {r["domain"] for r in rows} == {name} and {r["method"] for r in rows} == {method}
    metrics = {r["metric"] for r in rows}
    expected = {"organs": {"silhouette_umap", "silhouette_raw"}, "heart_rate": {"anisotropy", "r2_raw"},
                "dose_pairs": {"p_resid_last", "ld_clean"}}[name]
    assert expected <= metrics, metrics
