"""runners/map.py with method=neurons | image_lens | gradcam on both tiny VLM families (and neurons on a text model):
per_layer.csv, per_item.csv, summary.json and figures. In this process (tests/helpers.py); one CLI run is ``slow``."""
from __future__ import annotations

import csv
import json

import pytest

from helpers import run_cell_in_process, run_runner
from medinterp.errors import MedinterpError

QUICK = ["templates=2", "batch_size=4", "method.max_prompts=4", "method.n_boot=20", "logger=none"]
METRICS = {
    "neurons": {"topk_mass", "label_hit_fraction", "suppress_rel", "amplify_rel"},
    "image_lens": {"entropy", "inbox_hit_rate", "outbox_hit_rate"},
    "gradcam": {"energy_in_box", "pointing_hit"},
}
FIGURES = {"neurons": "curves_neurons.png", "image_lens": "lens_grid_*.png", "gradcam": "gradcam_*.png"}


def rows_of(out):
    with open(out / "per_layer.csv", newline="") as f:
        return list(csv.DictReader(f))


def check_cell(out, method: str, n_layers: int = 4) -> dict:
    rows = rows_of(out)
    assert {r["method"] for r in rows} == {method}
    per_metric = {}
    for r in rows:
        per_metric.setdefault(r["metric"], set()).add(int(r["layer"]))
    readouts = set(range(n_layers + 1)) if method == "image_lens" else set(range(1, n_layers + 1))
    for metric in METRICS[method]:
        assert per_metric[metric] == readouts, (metric, per_metric.get(metric))
    assert (out / "per_item.csv").stat().st_size > 0
    assert list(out.glob(FIGURES[method])), sorted(p.name for p in out.iterdir())
    assert (out / f"curves_{method}.png").exists()
    return json.loads((out / "summary.json").read_text())["method_summary"]


@pytest.mark.parametrize("model", ["tiny_llava", "tiny_gemma3_vlm"])
@pytest.mark.parametrize("method", list(METRICS))
def test_vlm_methods_map_an_image_set(model, method, tmp_path):
    out = run_cell_in_process([f"model={model}", "domain=synthetic_xray", f"method={method}", *QUICK], tmp_path / "run")
    summary = check_cell(out, method)
    if method == "neurons":
        assert set(summary["top_neurons"]) == {"1", "2", "3", "4"} and len(summary["top_neurons"]["1"]) == 10
        assert len(summary["top_neurons"]["1"][0]["tokens"]) == 5
    elif method == "image_lens":
        assert set(summary["top_tokens"]) == {"0", "1", "2", "3", "4"}
        assert summary["grid"] == ([6, 6, 0] if model == "tiny_llava" else [4, 4, 0])
    else:
        assert summary["target"] == "answer" and summary["n_with_box"] >= 1


def test_neurons_maps_a_text_domain(tmp_path):
    """Knowledge neurons of a text domain's facts (the term after the template's prompt)."""
    out = run_cell_in_process(["model=tiny_llama", "domain=disease", "method=neurons",
                               "method.attribution=integrated_gradients", "method.steps=4", *QUICK], tmp_path / "run")
    summary = check_cell(out, "neurons")
    assert summary["attribution"] == "integrated_gradients" and summary["n_prompts"] == 4


@pytest.mark.parametrize("args, message", [
    (["model=tiny_llama", "domain=synthetic_xray", "method=gradcam"], "method=gradcam needs a vision-language model"),
    (["model=tiny_llava", "domain=disease", "method=image_lens"],
     "method=image_lens reads image prompt sets only"),
    (["model=tiny_llama", "domain=disease", "method=neurons", "method.tokens=image"],
     "method=neurons tokens=image needs an image prompt set"),
    (["model=tiny_llava", "domain=synthetic_xray", "method=gradcam", "method.target=middle"],
     "unknown gradcam target 'middle'; valid: answer, question"),
])
def test_bad_settings_are_one_line(args, message, tmp_path):
    with pytest.raises(MedinterpError) as err:
        run_cell_in_process([*args, "logger=none"], tmp_path / "r")
    assert message in str(err.value) and "\n" not in str(err.value)


@pytest.mark.slow
def test_gradcam_from_the_command_line(tmp_path):
    out = tmp_path / "cli"
    run_runner("map.py", "model=tiny_gemma3_vlm", "domain=synthetic_xray", "method=gradcam", *QUICK,
               f"hydra.run.dir={out}")
    check_cell(out, "gradcam")
    assert (out / "report.html").exists()
