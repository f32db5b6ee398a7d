"""The geometry method: every metric at every read-out on tiny models, the logit lens at the last read-out, the token
sample, planted cases through the layer measurement, bad input, resume."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from medinterp.cell import Cell
from medinterp.errors import MedinterpError
from medinterp.methods.geometry import (
    FAMILIES,
    METRICS,
    Geometry,
    LayerIds,
    lens_sample,
    measure_layer,
    token_sample,
)
from medinterp.prompts import load_prompt_set
from medinterp.results import read_run
from medinterp.resume import Checkpoints
from medinterp.run import drive

FAST = ["method.n_boot=10", "method.n_pairs=500", "method.lens_max_prompts=16", "method.max_rows=1500", "logger=none"]
TOKEN_METRICS = {*FAMILIES["linearity"], "intra_similarity", "intra_similarity_adj"}


def by_key(rows):
    return {(r.labeling, r.metric, r.layer): r for r in rows}


@pytest.fixture(scope="module", params=["tiny_llama", "tiny_gemma3"])
def geometry_run(request, tmp_path_factory):
    from helpers import run_cell_in_process

    out = run_cell_in_process([f"model={request.param}", "domain=progression", "method=geometry", *FAST],
                              tmp_path_factory.mktemp(request.param))
    return read_run(out)


def test_every_metric_at_every_readout(geometry_run):
    rows = by_key(geometry_run.rows)
    n_layers = geometry_run.summary["model"]["n_layers"]
    for metric in METRICS:
        labeling = "tokens" if metric in TOKEN_METRICS else "last"
        for layer in range(n_layers + 1):
            assert (labeling, metric, layer) in rows, (labeling, metric, layer)
    assert ("tokens", "anisotropy_cosine", 2) in rows  # intra-similarity's baseline
    assert {r.layer for r in geometry_run.rows} == set(range(n_layers + 1))
    for metric in FAMILIES["linearity"]:  # block b is reported at read-out b + 1: none at read-out 0
        r = rows[("tokens", metric, 0)]
        assert math.isnan(r.value) and "undefined at read-out 0" in r.note
        assert math.isfinite(rows[("tokens", "linearity_heldout", 1)].value)
    for metric in ("id_twonn", "anisotropy_spectral", "self_similarity", "lens_kl"):
        r = rows[("last", metric, n_layers)]
        assert math.isfinite(r.value) and r.ci_low <= r.value <= r.ci_high, r


def test_lens_at_the_last_readout_is_the_output(geometry_run):
    """KL 0, rank 0 and agreement 1 at read-out n_layers (final norm once); the per-prompt rows back the means."""
    rows = by_key(geometry_run.rows)
    n_layers = geometry_run.summary["model"]["n_layers"]
    assert abs(rows[("last", "lens_kl", n_layers)].value) < 1e-6
    assert rows[("last", "lens_rank", n_layers)].value == 0
    assert rows[("last", "lens_top1_agree", n_layers)].value == 1
    assert rows[("last", "lens_kl", 1)].value > 1e-3  # an earlier read-out is not the output
    per_item = geometry_run.item_rows()
    items = [i for i in per_item if i.metric == "lens_kl" and i.layer == 1]
    assert len(items) == 16 == rows[("last", "lens_kl", 1)].n
    assert np.mean([i.value for i in items]) == pytest.approx(rows[("last", "lens_kl", 1)].value)
    terms = {i.item for i in per_item if i.metric == "self_similarity" and i.layer == 2}
    assert len(terms) == len(load_prompt_set("progression").items)


def test_summary_and_token_cap(geometry_run):
    s = geometry_run.summary["method_summary"]
    assert s["sampled_rows"] == 1500 < s["all_rows"]
    assert s["lens_prompts"] == 16
    assert rows_n(geometry_run, "tokens", "linearity_heldout") == {1500}


def test_figure_and_report_section(geometry_run):
    """curves_geometry.png (one panel per family) and the report's Geometry section with the read-out-0 notes."""
    from medinterp.report import write_run_report

    assert (geometry_run.path / "curves_geometry.png").stat().st_size > 10_000
    page = write_run_report(geometry_run.path).read_text()
    section = page[page.index('id="geometry"'):]
    assert "Token sets" in section and "undefined at read-out 0" in section and "id_twonn" in section
    assert "tokens/linearity_heldout" in section


def rows_n(run, labeling, metric):
    return {r.n for r in run.rows if r.labeling == labeling and r.metric == metric and r.layer > 0}


def test_token_sample_is_seeded_capped_and_the_same_on_rerun():
    lengths = [7, 3, 12, 9, 5] * 40
    offsets, all_tokens = token_sample(lengths, None, 0)
    assert offsets[-1] == sum(lengths) and np.array_equal(all_tokens, np.arange(sum(lengths)))
    _, capped = token_sample(lengths, 300, 0)
    assert len(capped) == 300 == len(np.unique(capped)) and np.all(np.diff(capped) > 0)
    assert np.array_equal(capped, token_sample(lengths, 300, 0)[1])
    assert not np.array_equal(capped, token_sample(lengths, 300, 1)[1])
    assert np.array_equal(token_sample(lengths, 10_000, 3)[1], all_tokens)  # under the cap: every token
    assert np.array_equal(lens_sample(50, 8, 0), lens_sample(50, 8, 0)) and len(lens_sample(50, 8, 0)) == 8
    assert np.array_equal(lens_sample(5, 8, 0), np.arange(5))


def test_prepare_is_the_same_on_rerun_and_rows_follow_the_sample(tiny_handles):
    """prepare() cuts the same batches and sample twice; each unit returns exactly its prompts' sampled tokens."""
    h, ps = tiny_handles["llama"], load_prompt_set("progression")
    method = Geometry(max_rows=200, lens_max_prompts=5, n_boot=5)
    cell = Cell(h, ps, method, tuple(t.id for t in ps.templates), batch_size=16, seed=3)
    a, b = method.prepare(cell), method.prepare(cell)
    assert np.array_equal(a.sampled, b.sampled) and len(a.sampled) == 200
    assert all(np.array_equal(x, y) for x, y in zip(a.batches, b.batches))
    got = [method.run_unit(h, a, i) for i in range(a.n_units)]
    tokens = np.sort(np.concatenate([g["tokens"] for g in got]))
    assert np.array_equal(tokens, a.sampled)
    assert sorted(np.concatenate([g["lens_prompts"] for g in got]).tolist()) == a.lens_prompts.tolist()
    # a row is the read-out of its token: the first sampled token of a prompt, captured alone
    g = next(g for g in got if len(g["tokens"]))
    p = int(np.searchsorted(a.offsets, g["tokens"][0], side="right") - 1)
    k = int(g["tokens"][0] - a.offsets[p])
    enc = h.tokenizer(a.texts[p], return_tensors="pt", return_special_tokens_mask=True)
    positions = torch.nonzero(enc["special_tokens_mask"][0] == 0)[:, 0]
    with torch.inference_mode():
        hs = h.model(input_ids=enc["input_ids"], output_hidden_states=True).hidden_states
    np.testing.assert_allclose(g["rows"][2, 0], hs[2][0, positions[k]].numpy(), rtol=1e-4, atol=1e-5)


# ------------------------------------------------------------------------------------------ planted cases
def ids(n_items, n_templates, n_layers=4, lens_prompts=()):
    return LayerIds(tuple(f"i{i}" for i in range(n_items)) * n_templates,
                    tuple(t for t in (f"t{j}" for j in range(n_templates)) for _ in range(n_items)), n_templates,
                    tuple(lens_prompts), "last", n_layers)


def measured(reduced, rows, previous, row_prompt, lens, layer_ids, layer=2, **kw):
    cfg = Geometry(n_boot=20, n_pairs=2000, **kw)
    ms, items = measure_layer(cfg, layer, reduced, rows, previous, row_prompt, lens, layer_ids, "cpu")
    return {(m.labeling, m.metric): m for m in ms}, items


def test_planted_contexts_tokens_and_lens():
    """Each term's vectors identical across templates (prompts template-major): SelfSim 1, and MEV 1 uncentred...
    each prompt's tokens identical: IntraSim 1; a linear step: linearity 1; the lens means of the given stats."""
    rng = np.random.default_rng(0)
    n_items, n_t, d = 40, 4, 16
    terms = rng.normal(size=(n_items, d))
    reduced = np.tile(terms, (n_t, 1)).astype(np.float32)  # prompt t * n_items + i is term i
    prompt_vec = rng.normal(size=(n_items * n_t, d))
    row_prompt = np.repeat(np.arange(n_items * n_t), 3)  # three tokens per prompt
    rows = prompt_vec[row_prompt].astype(np.float32)
    previous = (rows @ np.linalg.qr(rng.normal(size=(d, d)))[0].T).astype(np.float32)  # rows = previous @ Q
    lens = np.stack([np.full(5, 0.5), np.arange(5.0), np.array([1, 0, 1, 0, 1.0])])
    got, items = measured(reduced, rows, previous, row_prompt, lens, ids(n_items, n_t, lens_prompts=range(5)))
    assert got[("last", "self_similarity")].estimate.value == pytest.approx(1.0)
    assert got[("last", "self_similarity_adj")].estimate.value == pytest.approx(
        1.0 - got[("last", "anisotropy_cosine")].estimate.value)
    assert got[("tokens", "intra_similarity")].estimate.value == pytest.approx(1.0)
    assert got[("tokens", "linearity")].estimate.value == pytest.approx(1.0, abs=1e-6)
    assert got[("tokens", "linearity_heldout")].estimate.value == pytest.approx(1.0, abs=1e-6)
    assert got[("last", "lens_kl")].estimate.value == pytest.approx(0.5)
    assert got[("last", "lens_rank")].estimate.value == pytest.approx(2.0)
    assert got[("last", "lens_top1_agree")].estimate.value == pytest.approx(0.6)
    sims = {i.item: i.value for i in items if i.metric == "self_similarity"}
    assert len(sims) == n_items and all(v == pytest.approx(1.0) for v in sims.values())
    # the same vectors with the templates mixed up (item-major): terms no longer match, SelfSim drops
    mixed, _ = measured(np.repeat(terms, n_t, axis=0).astype(np.float32), rows, previous, row_prompt, lens,
                        ids(n_items, n_t, lens_prompts=range(5)))
    assert mixed[("last", "self_similarity")].estimate.value < 0.5


def test_too_few_contexts_and_rows_are_nan_with_a_reason():
    rng = np.random.default_rng(1)
    reduced = rng.normal(size=(30, 8)).astype(np.float32)  # 15 items x 2 templates
    rows = rng.normal(size=(60, 8)).astype(np.float32)
    got, _ = measured(reduced, rows, None, np.repeat(np.arange(30), 2), np.zeros((3, 0)), ids(15, 2), layer=0,
                      k_mle=40)
    for metric in ("self_similarity", "self_similarity_adj", "mev", "mev_adj"):
        m = got[("last", metric)]
        assert math.isnan(m.estimate.value) and "fewer than 3" in m.note
    assert math.isnan(got[("last", "id_mle")].estimate.value) and got[("last", "id_mle")].note
    assert math.isnan(got[("tokens", "linearity")].estimate.value)
    assert math.isnan(got[("last", "lens_kl")].estimate.value) and "no CI" in got[("last", "lens_kl")].note


@pytest.mark.parametrize("setting, value", [("max_rows", 1), ("n_folds", 1), ("k_mle", 0), ("lens_max_prompts", 1.5),
                                            ("discard_fraction", 1.0), ("n_jobs", True)])
def test_bad_settings_are_one_line(setting, value):
    with pytest.raises(MedinterpError) as err:
        Geometry(**{setting: value})
    assert setting in str(err.value) and "\n" not in str(err.value)


def test_bad_setting_through_the_runner(tmp_path):
    from helpers import run_cell_in_process

    with pytest.raises(MedinterpError, match="geometry method: n_folds must be an integer >= 2"):
        run_cell_in_process(["model=tiny_llama", "domain=progression", "method=geometry", "method.n_folds=1",
                             *FAST], tmp_path)


def test_resume_recomputes_no_checkpointed_unit(tiny_handles, tmp_path, monkeypatch):
    h, ps = tiny_handles["gemma3"], load_prompt_set("progression")
    method = Geometry(max_rows=400, lens_max_prompts=8, n_boot=10, n_pairs=300)
    cell = Cell(h, ps, method, tuple(t.id for t in ps.templates), batch_size=32)
    checkpoints = Checkpoints(tmp_path / "resume")
    first, info = drive(cell, checkpoints)
    assert info["resumed"] == 0

    def boom(*args, **kwargs):
        raise AssertionError("a checkpointed unit was recomputed")

    monkeypatch.setattr(Geometry, "run_unit", boom)
    monkeypatch.setattr("medinterp.methods.geometry.measure_layer", boom)
    again, info = drive(cell, checkpoints)
    assert info["resumed"] == info["units"] == cell.method.prepare(cell).n_units + h.n_layers + 1
    assert [str(m) for m in again.measurements] == [str(m) for m in first.measurements]  # str: NaN == NaN


@pytest.mark.slow  # the real Gemma-3-270M on a whole domain (about a minute on an idle 2-core CPU)
def test_gemma3_270m_drugs_every_metric_at_19_readouts(tmp_path):
    from helpers import run_cell_in_process

    run = read_run(run_cell_in_process(["model=gemma3_270m", "domain=drugs", "method=geometry", "logger=none"],
                                       tmp_path))
    rows = by_key(run.rows)
    assert {r.layer for r in run.rows} == set(range(19))
    for metric in METRICS:
        labeling = "tokens" if metric in TOKEN_METRICS else "last"
        assert all((labeling, metric, layer) in rows for layer in range(19)), metric
    assert abs(rows[("last", "lens_kl", 18)].value) < 1e-4 and rows[("last", "lens_top1_agree", 18)].value == 1
    assert rows[("last", "lens_kl", 6)].value > 1.0  # a middle layer does not predict the output yet
    heldout = [rows[("tokens", "linearity_heldout", layer)].value for layer in range(1, 19)]
    assert all(0.0 < v <= 1.0 for v in heldout)  # 7.6k token rows > d = 640: every block's step is fitted
    assert all(math.isfinite(rows[("last", "id_twonn", layer)].value) for layer in range(1, 19))


def test_summary_has_no_secret_looking_key(geometry_run):
    """W&B leaves out a summary.json with a secret-looking key (``token_rows`` would be one): none here."""
    from medinterp.secrets import has_secret_key

    assert not has_secret_key(geometry_run.summary["method_summary"])
    assert "one vector per prompt" in geometry_run.summary["method_summary"]["labelings"]["last"]
