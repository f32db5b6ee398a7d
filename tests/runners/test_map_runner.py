"""The CLI end to end: one cell, a multirun, and one-line errors for bad input. The real subprocesses are ``slow``;
the fast tier maps the cell and meets each bad input in this process (tests/helpers.py)."""
from __future__ import annotations

import csv
import json
import os
import subprocess
import sys

import pytest

from helpers import ROOT, run_cell_in_process, run_runner, runner
from medinterp.errors import MedinterpError

from medinterp.provenance import config_hash

FAST = ["method.n_boot=20", "method.n_perm=3", "method.n_jobs=1", "plots=true"]


def run_map(*args, cwd=ROOT, check=True):
    return run_runner("map.py", *args, cwd=cwd, check=check)


def read_csv(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_one_cell_writes_the_results_format(map_cell, tmp_path):
    out = map_cell(["model=tiny_llama", "domain=drugs", "method=umap", "templates=[started,prescribed]", *FAST],
                   tmp_path / "run")
    rows = read_csv(out / "per_layer.csv")
    assert list(rows[0]) == ["model", "domain", "labeling", "method", "metric", "layer", "value", "ci_low", "ci_high", "n",
                            "note", "run_id", "seed", "config_hash"]
    config = json.loads((out / "config.json").read_text())  # the resolved config; its hash and seed on every row
    assert {(r["seed"], r["config_hash"]) for r in rows} == {("0", config_hash(config))} and config["seed"] == 0
    choices = config["hydra"]["runtime"]["choices"]  # Hydra's group choices: sweeps read them here, not in .hydra/
    assert (choices["model"], choices["domain"], choices["method"]) == ("tiny_llama", "drugs", "umap")
    assert {r["model"] for r in rows} == {"tiny_llama"} and {r["method"] for r in rows} == {"umap"}
    assert {r["labeling"] for r in rows} == {"mechanism", "specialty", "specialty-mechanism", "all"}
    layers = {int(r["layer"]) for r in rows if r["metric"] == "silhouette_umap"}
    assert layers == {0, 1, 2, 3, 4}
    surface = [r for r in rows if r["metric"] == "silhouette_surface"]
    assert {r["layer"] for r in surface} == {"-1"} and len(surface) == 2
    summary = json.loads((out / "summary.json").read_text())
    assert summary["templates"] == ["started", "prescribed"] and summary["model"]["n_layers"] == 4
    assert sum(summary["label_counts"]["mechanism"].values()) == summary["n_points"]
    assert {b["metric"] for b in summary["best_layers"]} >= {"silhouette_umap", "silhouette_raw"}
    for fig in ("umap_grid_mechanism.png", "umap_grid_specialty.png", "curves_categorical.png"):
        assert (out / fig).stat().st_size > 10_000, fig
    assert not list(out.glob(".*.tmp"))  # no temp files left behind


@pytest.mark.slow
def test_multirun_over_models_and_domains(tmp_path):
    sweep = tmp_path / "sweep"
    proc = run_map("-m", "domain=age,progression", "model=tiny_llama,tiny_qwen2", f"hydra.sweep.dir={sweep}",
                   "templates=2", "plots=false", *FAST[:3])
    cells = sorted((p.name for p in sweep.iterdir() if (p / "per_layer.csv").exists()), key=lambda n: int(n.split("_")[0]))
    assert cells == ["0_tiny_llama-age-umap", "1_tiny_qwen2-age-umap", "2_tiny_llama-progression-umap",
                     "3_tiny_qwen2-progression-umap"]  # job number first: two jobs never share a folder
    age = read_csv(sweep / "0_tiny_llama-age-umap" / "per_layer.csv")
    assert {r["labeling"] for r in age} >= {"age/pooled", "age/female", "age/male", "gender", "band"}
    assert {r["metric"] for r in age if r["labeling"] == "age/pooled"} >= {"anisotropy", "r2_raw", "discontinuity"}
    prog = read_csv(sweep / "3_tiny_qwen2-progression-umap" / "per_layer.csv")
    assert any(r["labeling"].startswith("stage/") for r in prog)
    assert "results:" in proc.stderr + proc.stdout



@pytest.mark.slow
def test_parallel_cells_under_the_joblib_launcher_equal_one_process(tmp_path):
    """`make map MAP_JOBS=2` runs cells in two processes (hydra/launcher=joblib, one thread each on 2 cores): the
    same folders and numbers as the one-process multirun (UMAP exactly; saliency's fp32 sums within 1e-6 on this
    tiny model, since torch's threaded reductions differ in the last bits between 1 and 2 threads; on Gemma-3-270M
    up to 7e-6 per item, docs/benchmarks.md)."""
    sweeps = {}
    for name, extra in (("serial", []), ("parallel", ["hydra/launcher=joblib", "hydra.launcher.n_jobs=2"])):
        sweeps[name] = tmp_path / name
        run_map("-m", "model=tiny_llama", "domain=age,disease", "method=umap,saliency", "templates=2", "plots=false",
                "logger=none", "method.n_boot=20", f"hydra.sweep.dir={sweeps[name]}", *extra)
    names = {k: sorted(p.name for p in v.iterdir() if (p / "per_layer.csv").exists()) for k, v in sweeps.items()}
    assert names["parallel"] == names["serial"] == ["0_tiny_llama-age-umap", "1_tiny_llama-age-saliency",
                                                    "2_tiny_llama-disease-umap", "3_tiny_llama-disease-saliency"]
    proc = subprocess.run([sys.executable, str(ROOT / "scripts" / "compare_results.py"), str(sweeps["serial"]),
                           str(sweeps["parallel"]), "--rtol", "1e-6"], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    umap = [line for line in proc.stdout.splitlines() if "-umap/per_layer.csv:" in line]
    assert len(umap) == 2 and all("max relative difference 0," in line for line in umap), proc.stdout

BAD_INPUT = [
    (["model=nope"], "error: unknown model 'nope'; valid: biomistral_7b, clinicalcamel_70b, gemma3_270m, gemma3_27b"),
    (["-m", "domain=age,nerves"], "error: unknown domain 'nerves'; valid: age, control, disease, dosage, drugs, progression, symptoms, synthetic_xray"),
    (["method=magic"], "error: unknown method 'magic'; valid: ablation, geometry, gradcam, image_lens, neurons, patching, saliency, "
                       "umap"),
    (["judge=gpt9"], "error: unknown judge 'gpt9'; valid: deterministic, local, openai"),
    (["model=tiny_llama", "reduction=first"], "error: unknown reduction 'first'; valid: last, mean, term"),
    (["model=tiny_llama", "templates=[nope]"], "error: unknown template for domain 'drugs': 'nope'; valid:"),
    (["model=tiny_llama", "templates=9"], "error: templates=9: domain 'drugs' has 4 templates; use 1..4"),
    (["model=hf", "model.path=/no/such/folder"], "error: model 'hf': model.path '/no/such/folder' does not exist"),
    (["model=hf"], "error: The 'model.path' setting is required for model 'hf' (source hf); it is not set"),
    (["model=tiny_llama", "seed=abc"], "error: The 'seed' setting must be an integer in [0, 2**32); got 'abc'."),
    (["model=tiny_llama", "templates=[]"], "error: The 'templates' setting must be 'all', a number 1..4 or a non-empty"),
    (["model=tiny_llama", "batch_size=0"], "error: The 'batch_size' setting must be a positive integer; got 0."),
    (["model=tiny_llama", "batch_tokens=0"], "error: The 'batch_tokens' setting must be a positive integer or null; got 0."),
    (["model=tiny_llama", "max_batch_tokens=4096"], "error: max_batch_tokens was renamed batch_tokens: padded tokens per "
                                                    "forward pass, for every method (conf/map.yaml)"),
    (["model=tiny_llama", "method=saliency", "method.batch_size=8"],
     "error: method.batch_size was replaced by the top-level batch_size: prompts per forward pass, for every method"),
    (["model=tiny_llama", "domain.prompt_set=/no/such.yaml"], "/no/such.yaml"),
    (["model=tiny_llama", "domain=synthetic_xray", "method=geometry"],
     "the prompt set holds images, but model 'tiny_llama' is a text-only model"),
    (["model=tiny_llama", "domain=synthetic_xray", "method=patching"],
     "the prompt set holds images, but model 'tiny_llama' is a text-only model"),
    (["model=tiny_llava", "domain=disease", "method=geometry", "method.tokens=image"],
     "method=geometry tokens=image needs an image prompt set; prompt set 'disease' is a text set"),
    (["model=tiny_llama", "domain=synthetic_xray", "method=ablation"],
     "the prompt set holds images, but model 'tiny_llama' is a text-only model"),
    (["model=tiny_llama", "domain=synthetic_xray", "method=umap"],
     "the prompt set holds images, but model 'tiny_llama' is a text-only model"),
    (["model=tiny_llava", "domain=disease", "method=saliency", "method.tokens=image"],
     "method=saliency tokens=image needs an image prompt set; prompt set 'disease' is a text set"),
]


@pytest.mark.slow
@pytest.mark.parametrize("args, message", BAD_INPUT)
def test_bad_input_is_one_line_without_traceback(tmp_path, args, message):
    proc = run_map(*args, f"hydra.run.dir={tmp_path}/r", f"hydra.sweep.dir={tmp_path}/s", check=False)
    assert proc.returncode == 2, proc.stderr[-2000:]
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and message in errors[0], proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr


@pytest.mark.parametrize("args, message", BAD_INPUT)
def test_bad_input_is_one_medinterp_error_in_process(tmp_path, args, message):
    """The errors of the test above, met in this process: the CLI's check of config-group choices, then the cell.
    The CLI prints a MedinterpError as ``error: <message>`` (test below)."""
    argv = [a for a in args if a != "-m"]
    groups = tuple(key for key, _, _ in (a.partition("=") for a in argv) if (ROOT / "conf" / key).is_dir())
    with pytest.raises(MedinterpError) as err:
        runner("_common").check_group_choices(argv, groups)
        run_cell_in_process(argv, tmp_path / "r")
    assert message.removeprefix("error: ") in str(err.value) and "\n" not in str(err.value)


def test_a_retired_setting_in_a_config_file_is_one_line_naming_its_replacement(tmp_path):
    """A retired key that reaches the composed config (a conf/local/default.yaml written for an older version; here
    added with +) is named with what replaced it, not dropped silently or refused as an unknown method setting."""
    with pytest.raises(MedinterpError, match=r"^max_batch_tokens was renamed batch_tokens: "):
        run_cell_in_process(["model=tiny_llama", "+max_batch_tokens=100"], tmp_path / "r")
    with pytest.raises(MedinterpError, match=r"^method.max_batch_tokens was replaced by the top-level batch_tokens: "):
        run_cell_in_process(["model=tiny_llama", "method=ablation", "+method.max_batch_tokens=100"], tmp_path / "r2")


def test_a_medinterp_error_is_one_line_on_stderr_and_exit_2(capsys):
    @runner("_common").user_errors
    def failing():
        raise MedinterpError("bad 'x'; valid: a, b")

    with pytest.raises(SystemExit) as exit_:
        failing()
    assert exit_.value.code == 2 and capsys.readouterr().err == "error: bad 'x'; valid: a, b\n"


@pytest.mark.slow
def test_sigterm_mid_capture_leaves_only_a_resumable_partial_entry(tmp_path):
    """A run killed while writing the activation cache leaves no temp file and no entry that looks complete: only the
    partial entry (``<reduction>.partial.npy`` + its record) a restart resumes from (medinterp/capture/cache.py)."""
    import signal
    import time

    env = {**os.environ, "MEDINTERP_CACHE": str(tmp_path / "cache"), "PYTHONUNBUFFERED": "1"}
    # A large batch count (batch_size=1) keeps the capture running long enough to be interrupted in it.
    proc = subprocess.Popen([sys.executable, str(ROOT / "runners" / "map.py"), "model=tiny_llama", "domain=age",
                             "batch_size=1", f"hydra.run.dir={tmp_path}/run"], env=env, cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    # The partial entry's record appears with the first batch written and stays until the capture completes (a
    # ``*.tmp`` file lives only for the instant a record is rewritten: polling for one missed it on a slow host).
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None and not list((tmp_path / "cache").rglob("*.partial.json")):
        time.sleep(0.05)
    assert list((tmp_path / "cache").rglob("*.partial.json")), "capture never started"
    proc.send_signal(signal.SIGTERM)
    proc.wait(timeout=60)
    assert proc.returncode != 0
    assert not list((tmp_path / "cache").rglob("*.tmp"))
    entries = sorted(p.name for p in (tmp_path / "cache").rglob("*.npy"))
    assert entries and all(name.endswith(".partial.npy") for name in entries), entries


@pytest.mark.slow
def test_a_cell_publishes_a_report_and_an_offline_wandb_run_and_logger_none_turns_wandb_off(tmp_path, monkeypatch):
    args = ("model=tiny_llama", "domain=dosage", "method=patching", "method.n_boot=20")
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_DATA_DIR", str(tmp_path / "wandb-data"))  # staged artifacts stay under tmp_path
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test-secret-that-must-not-leak-0123")
    on = tmp_path / "on"
    run_map(*args, f"hydra.run.dir={on}")
    assert (on / "report.html").stat().st_size > 5_000
    logged = json.loads((on / "wandb_logged.json").read_text())
    assert logged["name"] == "tiny_llama-dosage-patching" and logged["job_type"] == "patching"
    assert len(list((on / "wandb").glob("offline-run-*"))) == 1
    for path in tmp_path.rglob("*"):
        if path.is_file():
            assert b"sk-test-secret-that-must-not-leak-0123" not in path.read_bytes(), path
    off = tmp_path / "off"
    run_map(*args, f"hydra.run.dir={off}", "logger=none", "report=false")
    assert (off / "per_layer.csv").exists()
    assert not (off / "wandb").exists() and not (off / "wandb_logged.json").exists() and not (off / "report.html").exists()
