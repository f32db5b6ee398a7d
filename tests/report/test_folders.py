"""Folder detection, walking a multirun, and runners/report.py end to end (real subprocesses)."""
from __future__ import annotations

import shutil

import pytest

from helpers import ROOT, run_runner
from medinterp.errors import MedinterpError
from medinterp.report import find_report_folders, write_report, write_reports
from medinterp.results import folder_kind


@pytest.fixture
def multirun(tmp_path, run_dir, map_dir, summary_dir):
    """outputs/multirun/<time>/ with two runs, synthesis/golden/, a sweep summary, a .hydra folder and a
    wandb/ folder holding a copy of a run."""
    root = tmp_path / "multirun"
    shutil.copytree(run_dir, root / "tiny-drugs-umap")
    shutil.copytree(run_dir, root / "tiny-age-umap")
    (root / "tiny-age-umap" / ".hydra").mkdir()
    shutil.copytree(map_dir, root / "synthesis" / "golden")
    shutil.copytree(summary_dir, root / "summary")
    shutil.copytree(run_dir, root / "wandb" / "offline-run-1" / "files")   # W&B's copy: not a result folder
    (root / "multirun.yaml").write_text("hydra: {}\n")
    return root


def test_kinds(run_dir, map_dir, summary_dir, tmp_path):
    assert (folder_kind(run_dir), folder_kind(map_dir), folder_kind(summary_dir), folder_kind(tmp_path)) == \
        ("run", "map", "summary", None)


def test_walk_finds_each_result_folder_once(multirun):
    found = [(p.relative_to(multirun).as_posix(), k) for p, k in find_report_folders(multirun)]
    # the summary's golden/ map is part of the summary: not visited on its own
    assert found == [("summary", "summary"), ("synthesis/golden", "map"), ("tiny-age-umap", "run"),
                     ("tiny-drugs-umap", "run")]
    written = write_reports(multirun)
    assert [p.relative_to(multirun).as_posix() for p in written] == [
        f"{f}/report.html" for f, _ in found]
    assert not (multirun / "summary" / "golden" / "report.html").exists()
    assert write_reports(multirun / "tiny-age-umap") == [multirun / "tiny-age-umap" / "report.html"]


def test_errors_name_the_problem(tmp_path, run_dir):
    with pytest.raises(MedinterpError, match=r"^report: no such folder '/no/such'$"):
        write_reports("/no/such")
    with pytest.raises(MedinterpError, match=r"^report: no run, knowledge-map or sweep-summary folder under"):
        write_reports(_empty(tmp_path))
    with pytest.raises(MedinterpError,
                       match=r"^unknown report kind 'page'; valid: atlas, auto, map, run, summary, validity$"):
        write_report(run_dir, "page")
    with pytest.raises(MedinterpError, match=r"^report: no knowledge_map.json in "):
        write_report(run_dir, "map")


def _empty(tmp_path):
    (tmp_path / "empty" / "sub").mkdir(parents=True)
    return tmp_path / "empty"


def report(*args, cwd=ROOT, check=True):
    return run_runner("report.py", *args, cwd=cwd, check=check, timeout=120)


@pytest.mark.slow  # runners/report.py in a subprocess; write_report itself is tested above
def test_runner_writes_a_report_per_folder_and_nothing_else(multirun):
    cwd = multirun.parent
    before = sorted(cwd.iterdir())
    proc = report(f"path={multirun}", cwd=cwd)
    assert sorted(p.relative_to(multirun).as_posix() for p in multirun.rglob("report.html")) == [
        "summary/report.html", "synthesis/golden/report.html", "tiny-age-umap/report.html",
        "tiny-drugs-umap/report.html"]
    assert f"4 report(s) under {multirun}" in proc.stdout + proc.stderr
    assert f"run report: {multirun}/tiny-age-umap/report.html" in proc.stdout + proc.stderr
    assert sorted(cwd.iterdir()) == before          # no outputs/, .hydra/ or log file where it ran
    assert not list(multirun.rglob("*.log")) and not list(multirun.rglob(".*.tmp"))


@pytest.mark.parametrize("args, message", [
    ([], "error: path= is required"),
    (["path=/no/such/folder"], "error: report: no such folder '/no/such/folder'"),
    (["path={tmp}", "kind=page"], "error: unknown report kind 'page'; valid: atlas, auto, map, run, summary, validity"),
    (["path={tmp}/tiny-drugs-umap", "kind=summary"], None),   # any folder can be shown as a summary
])
@pytest.mark.slow
def test_runner_bad_input_is_one_line_exit_2(multirun, args, message):
    proc = report(*[a.format(tmp=multirun) for a in args], check=False)
    if message is None:
        assert proc.returncode == 0, proc.stderr[-2000:]
        return
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert proc.stderr.strip().startswith(message) and len(proc.stderr.strip().splitlines()) == 1
