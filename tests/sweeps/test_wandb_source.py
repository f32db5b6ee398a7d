"""Reading a W&B sweep through a fake wandb.Api (no network): the same summary as the local folder."""
from __future__ import annotations

import csv
import shutil
from pathlib import Path

import pytest

from medinterp.errors import MedinterpError
from medinterp.sweeps.summary import summarize
from medinterp.sweeps.wandb_source import fetch_sweep, sweep_path


class FakeArtifact:
    def __init__(self, type_: str, files: dict[str, Path]):
        self.type, self.files = type_, files

    def download(self, root: str) -> str:
        for name, src in self.files.items():
            shutil.copy(src, Path(root) / name)
        return root


class FakeFile:
    def __init__(self, src: Path):
        self.name, self.src = src.name, src

    def download(self, root: str, replace: bool = False):
        shutil.copy(self.src, Path(root) / self.name)


class FakeRun:
    def __init__(self, id_, state="finished", config=None, artifacts=(), files=()):
        self.id, self.state, self.config = id_, state, config or {}
        self._artifacts, self._files = list(artifacts), list(files)

    def logged_artifacts(self):
        return self._artifacts

    def files(self):
        return self._files


class FakeApi:
    def __init__(self, runs):
        self.runs, self.asked = runs, []

    def sweep(self, path):
        self.asked.append(path)
        if path.endswith("missing"):
            raise ValueError("Could not find sweep")
        return type("Sweep", (), {"runs": self.runs})()


def runs_from(folder: Path) -> list[FakeRun]:
    """One W&B run per job of a local sweep: half as a results artifact, half as uploaded files."""
    runs = []
    for i, job in enumerate(sorted(p for p in folder.iterdir() if p.is_dir())):
        files = {p.name: p for p in job.iterdir() if p.is_file()}
        if i % 2:
            runs.append(FakeRun(f"r{i}", artifacts=[FakeArtifact("prompt-set", {}), FakeArtifact("results", files)]))
        else:  # no artifact: the per_layer table as a file; settings from the run's config
            import json
            config = json.loads((job / "config.json").read_text())
            runs.append(FakeRun(f"r{i}", config=config, files=[FakeFile(files["per_layer.csv"])]))
    return runs


def read(path):
    with open(path, newline="") as f:
        return [{k: v for k, v in r.items()} for r in csv.DictReader(f)]


def test_fetched_sweep_summarises_like_the_local_folder(methods_sweep, sigma0, tmp_path):
    api = FakeApi(runs_from(methods_sweep) + [FakeRun("running1", state="running"), FakeRun("empty")])
    dest = fetch_sweep(api, "team/medinterp/abc123", tmp_path / "fetched")
    assert api.asked == ["team/medinterp/abc123"]
    assert sorted(p.name for p in dest.iterdir()) == [f"r{i}" for i in range(8)]  # unfinished and empty runs skipped
    assert (dest / "r0" / "summary.json").exists() and (dest / "r0" / "per_layer.csv").exists()
    online = summarize(dest, tmp_path / "online", sigma0, figures=False, source="team/medinterp/abc123")
    local = summarize(methods_sweep, tmp_path / "local", sigma0, figures=False)
    assert online["sweep"] == "team/medinterp/abc123" and online["varied_keys"] == local["varied_keys"]
    assert read(tmp_path / "online" / "stability.csv") == read(tmp_path / "local" / "stability.csv")


def test_a_flat_knowledge_map_is_moved_under_its_model(tmp_path, kit):
    src = kit.write_map(tmp_path / "src", kit.kmap({"age": {"umap": [[1, 2]]}}, {"sigma": 2.0}))
    dest = fetch_sweep(FakeApi([FakeRun("m1", artifacts=[FakeArtifact("results", {"knowledge_map.json": src})])]), "p/s",
                       tmp_path / "fetched")
    assert (dest / "m1" / "toy" / "knowledge_map.json").exists() and not (dest / "m1" / "knowledge_map.json").exists()


def test_errors(tmp_path):
    with pytest.raises(MedinterpError, match="W&B sweep 'e/p/missing': ValueError: Could not find sweep"):
        fetch_sweep(FakeApi([]), "e/p/missing", tmp_path / "a")
    with pytest.raises(MedinterpError, match="none of its 1 runs is finished with results"):
        fetch_sweep(FakeApi([FakeRun("x", state="crashed")]), "e/p/s", tmp_path / "b")


@pytest.mark.parametrize("sweep, entity, project, expected", [
    ("e/p/id", None, None, "e/p/id"), ("p/id", "e", None, "e/p/id"), ("p/id", None, None, "p/id"),
    ("id", "e", "medinterp", "e/medinterp/id"), ("id", None, "medinterp", "medinterp/id"),
])
def test_sweep_path(sweep, entity, project, expected):
    assert sweep_path(sweep, entity, project) == expected


def test_sweep_path_needs_a_project_for_a_bare_id():
    with pytest.raises(MedinterpError, match="a sweep id with wandb.project set"):
        sweep_path("abc", None, None)
