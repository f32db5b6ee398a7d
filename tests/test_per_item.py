"""per_item.csv: the per-item values behind every per-layer mean of the model methods, and a writer that never
overwrites a results folder."""
from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import replace

import numpy as np
import pytest

from medinterp.errors import MedinterpError
from medinterp.methods.ablation import LayerAblation
from medinterp.methods.geometry import Geometry
from medinterp.methods.patching import ActivationPatching
from medinterp.methods.saliency import WeightSaliency
from medinterp.cell import Cell
from medinterp.run import run_cell
from medinterp.prompts import load_prompt_set
from medinterp.results import ITEM_COLUMNS, ItemRow, Row, RunWriter, read_item_rows, read_rows

METHODS = {  # method -> (method, domain, templates, the cell's batch_size)
    "saliency": (lambda: WeightSaliency(n_boot=20, max_prompts=6), "drugs", ["started", "prescribed"], 4),
    "ablation": (lambda: LayerAblation(max_prompts=4, max_new_tokens=3, n_boot=20), "dosage", ["reads", "takes"], 4),
    # min_gap between the tiny model's gaps (~0.01-0.3): some pairs are filtered, the rest kept
    "patching": (lambda: ActivationPatching(sites=("resid_last", "attn"), min_gap=0.05, n_boot=20), "dosage", [], 32),
    # a token cap below the prompts' tokens: some prompts keep one token and have no intra-similarity
    "geometry": (lambda: Geometry(max_rows=250, lens_max_prompts=6, n_boot=20, n_pairs=200), "progression",
                 ["status", "clinic_note", "follow_up", "assessment"], 32),
}

MEANS = {"saliency": {"loss", "grad_attn", "grad_mlp", "grad_block", "grad_embed"},
         "ablation": {"kl", "dlogp", "judge_score"},
         "patching": {"ld_clean", "ld_corrupt", "p_resid_last", "p_attn"},
         "geometry": {"self_similarity", "mev", "intra_similarity", "lens_kl", "lens_rank", "lens_top1_agree"}}


def run_into(folder, handle, method_name):
    make, domain, templates, batch_size = METHODS[method_name]
    writer = RunWriter(folder)
    summary = run_cell(Cell(handle, load_prompt_set(domain), make(), tuple(templates), batch_size=batch_size), writer,
                       plots=False)
    return read_rows(folder / "per_layer.csv"), read_item_rows(folder / "per_item.csv"), summary


@pytest.mark.parametrize("method_name", sorted(METHODS))
def test_per_layer_values_are_the_means_of_the_per_item_values(tmp_path, tiny_handles, method_name):
    rows, items, summary = run_into(tmp_path / "run", tiny_handles["llama"], method_name)
    by_key = defaultdict(list)
    for it in items:
        assert (it.model, it.method) == ("tiny_llama", method_name)
        if not it.note and math.isfinite(it.value):
            by_key[(it.labeling, it.metric, it.layer)].append(it.value)
    averaged = [r for r in rows if (r.labeling, r.metric, r.layer) in by_key]
    # every mean over prompts/pairs has its items (other rows, e.g. judge bookkeeping, are not means over items)
    assert {r.metric for r in averaged} == MEANS[method_name]
    assert {(r.metric, r.layer) for r in averaged} == {(r.metric, r.layer) for r in rows if r.metric in MEANS[method_name]}
    for r in averaged:
        if math.isnan(r.value) and r.note:  # a row withheld on purpose (its note says why) is no mean
            continue
        values = by_key[(r.labeling, r.metric, r.layer)]
        assert r.n == len(values), (r.metric, r.layer)
        assert r.value == pytest.approx(float(np.mean(values)), rel=1e-12, abs=1e-15), (r.metric, r.layer)
    assert summary["domain"] == items[0].domain


def test_saliency_items_are_prompts_and_ablation_items_are_prompts_per_block(tmp_path, tiny_handles):
    _, items, _ = run_into(tmp_path / "s", tiny_handles["llama"], "saliency")
    prompts = {(it.item, it.template) for it in items}
    assert len(prompts) == 6 and all(t in ("started", "prescribed") for _, t in prompts)
    assert {it.metric for it in items} == {"loss", "grad_attn", "grad_mlp", "grad_block", "grad_embed"}
    _, items, _ = run_into(tmp_path / "a", tiny_handles["llama"], "ablation")
    per_block = defaultdict(set)
    for it in items:
        per_block[(it.metric, it.layer)].add((it.item, it.template))
    assert sorted(per_block) == sorted((m, layer) for m in ("kl", "dlogp", "judge_score") for layer in (1, 2, 3, 4))
    assert all(len(v) == 4 for v in per_block.values())


def test_patching_items_name_the_pairs_and_filtered_pairs_say_why(tmp_path, tiny_handles):
    _, items, summary = run_into(tmp_path / "p", tiny_handles["llama"], "patching")
    ms = summary["method_summary"]
    assert ms["n_filtered"] > 0 and ms["n_kept"] > 0  # the planted mix: both kinds present
    noted = {it.item for it in items if it.note}
    assert noted == set(ms["filtered_pairs"])
    assert all(it.note.startswith("filtered: |LD_clean - LD_corrupt|") for it in items if it.note)
    assert all(it.metric in ("ld_clean", "ld_corrupt") for it in items if it.note)  # no P for a filtered pair
    p_pairs = {it.item for it in items if it.metric == "p_resid_last"}
    assert len(p_pairs) == ms["n_kept"] and not p_pairs & noted
    assert {it.template for it in items} == {""}


def test_item_rows_round_trip_and_nan_is_kept(tmp_path):
    rows = [ItemRow("m", "d", "ablation", "all", "judge_score", 3, "x", "t", math.nan, "no judge score: timeout"),
            ItemRow("m", "d", "patching", "pairs", "p_attn", 1, "pair,with comma", "", 0.125)]
    writer = RunWriter(tmp_path / "r")
    writer.add_rows([Row("m", "d", "all", "ablation", "kl", 1, 0.5)])
    writer.add_item_rows(rows)
    writer.finish({})
    header = (tmp_path / "r" / "per_item.csv").read_text().splitlines()[0]
    assert tuple(header.split(",")) == ITEM_COLUMNS
    back = read_item_rows(tmp_path / "r" / "per_item.csv")
    assert back[1] == replace(rows[1], run_id=writer.run_id)  # stamped with the run; no config: no seed or hash
    assert math.isnan(back[0].value) and back[0].note == rows[0].note


def test_a_results_folder_is_never_overwritten(tmp_path):
    first = RunWriter(tmp_path / "r")
    first.add_rows([Row("m", "d", "all", "umap", "x", 0, 1.0)])
    first.finish({})
    before = (tmp_path / "r" / "per_layer.csv").read_bytes()
    with pytest.raises(MedinterpError, match="per_layer.csv already exists"):
        RunWriter(tmp_path / "r")
    # a writer opened before another job wrote the folder refuses at finish, too
    late = RunWriter(tmp_path / "q")
    other = RunWriter(tmp_path / "q")
    other.add_rows([Row("m", "d", "all", "umap", "x", 0, 2.0)])
    other.finish({})
    late.add_rows([Row("m", "d", "all", "umap", "x", 0, 3.0)])
    with pytest.raises(MedinterpError, match="already exists"):
        late.finish({})
    assert read_rows(tmp_path / "q" / "per_layer.csv")[0].value == 2.0
    assert (tmp_path / "r" / "per_layer.csv").read_bytes() == before
