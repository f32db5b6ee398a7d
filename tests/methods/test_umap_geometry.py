"""The UMAP geometry method on synthetic activations whose structure is known layer by layer."""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from sklearn.metrics import silhouette_score

from medinterp.errors import MedinterpError
from medinterp.methods import Points
from medinterp.methods.umap_geometry import UmapGeometry, class_subsets

FAST = dict(n_boot=50, n_perm=5, n_jobs=1, seed=0)


def categorical_points(n_per=20, classes=("a", "b", "c")):
    labels = np.repeat(np.array(classes), n_per)
    terms = tuple(f"{c}term{i}" for c in classes for i in range(n_per))
    return Points(item_ids=np.arange(len(labels)).astype(str), template_ids=np.array(["t"] * len(labels)), terms=terms,
                  labels={"cls": labels}, kinds={"cls": "categorical"}, group_by={"cls": None})


def test_silhouette_rises_where_the_classes_separate():
    rng = np.random.default_rng(0)
    pts = categorical_points()
    centers = rng.normal(size=(3, 16)) * 8
    noise = rng.normal(size=(3, len(pts), 16))
    acts = noise.copy()
    acts[1] += centers[np.searchsorted(["a", "b", "c"], pts.labels["cls"])]  # layer 1: well separated
    acts[2] = acts[1] + 3 * rng.normal(size=(len(pts), 16))  # layer 2: separated, noisier
    res = UmapGeometry(**FAST).run(acts.astype(np.float32), pts)
    get = {(m.metric, m.layer): m.estimate for m in res.measurements}
    assert get[("silhouette_umap", 1)].value > 0.6 > get[("silhouette_umap", 0)].value
    assert abs(get[("silhouette_umap_null", 1)].value) < 0.1
    # the raw-space number is exactly sklearn's cosine silhouette of the (template-centred) activations
    for layer in range(3):
        want = silhouette_score(acts[layer] - acts[layer].mean(0), pts.labels["cls"], metric="cosine")
        assert get[("silhouette_raw", layer)].value == pytest.approx(want, abs=1e-5)
        est = get[("silhouette_umap", layer)]
        assert est.ci_low <= est.value <= est.ci_high and est.n == len(pts)
    assert get[("silhouette_raw", 1)].value > get[("silhouette_raw", 2)].value > get[("silhouette_raw", 0)].value
    # the surface-form control is one layer-independent row: terms start with their class letter
    surface = [m for m in res.measurements if m.metric == "silhouette_surface"]
    assert [m.layer for m in surface] == [-1] and surface[0].estimate.value > 0
    assert len(res.artifacts["embedding_2d"]) == 3 and res.artifacts["embedding_2d"][0].shape == (len(pts), 2)


def age_points():
    ages = np.tile(np.arange(1, 41), 2).astype(float)
    gender = np.repeat(np.array(["female", "male"]), 40)
    return Points(item_ids=np.arange(80).astype(str), template_ids=np.array(["t"] * 80), terms=tuple(map(str, ages)),
                  labels={"age": ages, "gender": gender}, kinds={"age": "numeric", "gender": "categorical"},
                  group_by={"age": None, "gender": None})


def test_age_metrics_find_a_linear_code_and_an_injected_jump():
    rng = np.random.default_rng(1)
    pts = age_points()
    ages = pts.labels["age"]
    direction = rng.normal(size=24)
    smooth = np.outer(ages, direction) / 10 + 0.05 * rng.normal(size=(80, 24))
    jump = smooth + np.outer(ages >= 18, direction) * 3  # a step 30× the typical age step at 17 → 18
    acts = np.stack([rng.normal(size=(80, 24)), smooth, jump]).astype(np.float32)
    res = UmapGeometry(**FAST).run(acts, pts, ["age"])
    get = {(m.labeling, m.metric, m.layer): m.estimate.value for m in res.measurements}
    for sub in ("age/pooled", "age/female", "age/male"):
        assert get[(sub, "r2_raw", 1)] > 0.95 and get[(sub, "r2_raw", 0)] < 0.2
        assert get[(sub, "r2_raw_null", 1)] < 0.2
        assert 0.5 < get[(sub, "discontinuity", 1)] < 2.0
        assert get[(sub, "discontinuity", 2)] > 5 and get[(sub, "discontinuity_rank", 2)] == 1.0
        assert 0.2 < get[(sub, "anisotropy_null", -1)] < 0.6  # k is capped to the subset size here
    assert ("gender", "silhouette_umap", 1) not in get  # only the requested labeling


def test_nested_ordinal_labels_are_scored_within_each_group():
    stage = np.tile(np.repeat([0, 1, 2], 4), 2).astype(float)
    disease = np.repeat(np.array(["copd", "ckd"]), 12)
    pts = Points(item_ids=np.arange(24).astype(str), template_ids=np.array(["t"] * 24), terms=tuple("x" * 24),
                 labels={"stage": stage, "disease": disease}, kinds={"stage": "ordinal", "disease": "categorical"},
                 group_by={"stage": "disease", "disease": None})
    subsets = [(name, int(mask.sum()), sorted(set(labels))) for name, mask, labels in class_subsets(pts, "stage")]
    assert subsets == [("stage/ckd", 12, [0.0, 1.0, 2.0]), ("stage/copd", 12, [0.0, 1.0, 2.0])]


def test_bad_settings_and_inputs_are_named():
    with pytest.raises(MedinterpError, match="n_neighbors must be >= 2; got 1"):
        UmapGeometry(n_neighbors=1)
    with pytest.raises(MedinterpError, match="min_dist must be in"):
        UmapGeometry(min_dist=2.0)
    pts = categorical_points(5)
    with pytest.raises(MedinterpError, match="do not match 15 points"):
        UmapGeometry(**FAST).run(np.zeros((2, 14, 4), np.float32), pts)
    with pytest.raises(MedinterpError, match=r"unknown labeling\(s\) \['organ'\]; valid: cls"):
        UmapGeometry(**FAST).run(np.zeros((2, 15, 4), np.float32), pts, ["organ"])


def test_findings_rows_contrast_gender_step_circularity_and_rank():
    rng = np.random.default_rng(3)
    # Contrast: 'cls' is separated at layer 1, 'rnd' is not → cls − rnd > 0 with a CI above 0.
    pts = categorical_points()
    rnd = rng.permutation(pts.labels["cls"])
    pts = Points(pts.item_ids, pts.template_ids, pts.terms, {"cls": pts.labels["cls"], "rnd": rnd},
                 {"cls": "categorical", "rnd": "categorical"}, {"cls": None, "rnd": None})
    acts = rng.normal(size=(2, len(pts), 16))
    acts[1] += 8 * rng.normal(size=(3, 16))[np.searchsorted(["a", "b", "c"], pts.labels["cls"])]
    res = UmapGeometry(**FAST, contrasts=[["cls", "rnd"]]).run(acts.astype(np.float32), pts)
    get = {(m.labeling, m.metric, m.layer): m.estimate for m in res.measurements}
    assert get[("cls-rnd", "silhouette_raw_diff", 1)].ci_low > 0.3
    assert get[("cls-rnd", "silhouette_umap_diff", 1)].ci_low > 0.3
    assert {layer for (lab, met, layer) in get if met == "effective_rank"} == {0, 1}
    assert get[("all", "effective_rank", 1)].value < get[("all", "effective_rank", 0)].value  # 3 clusters dominate

    # Gender: a 17→18 jump in female points only → discontinuity_diff (female − male) > 0.
    apts = age_points()
    ages, female = apts.labels["age"], apts.labels["gender"] == "female"
    d = rng.normal(size=24)
    ramp = np.outer(ages, d) / 10 + 0.02 * rng.normal(size=(80, 24))
    acts = np.stack([ramp, ramp + np.outer((ages >= 18) & female, d) * 3]).astype(np.float32)
    res = UmapGeometry(**FAST).run(acts, apts, ["age"])
    diff = {m.layer: m.estimate for m in res.measurements if m.metric == "discontinuity_diff"}
    # one point per (age, gender) here, so the within-age bootstrap is degenerate; real runs have one per template
    assert diff[1].value > 5 and abs(diff[0].value) < 1

    # Circularity: disease 'loop' walks a circle, disease 'line' a straight path.
    T, per = 6, 4
    angle = np.repeat(2 * np.pi * np.arange(T) / T, per)
    loop = np.column_stack([np.cos(angle), np.sin(angle)]) @ rng.normal(size=(2, 16))
    line = np.repeat(np.arange(T), per)[:, None] * rng.normal(size=(1, 16))
    X = np.concatenate([loop, line]) + 0.01 * rng.normal(size=(2 * T * per, 16))
    stage = np.tile(np.repeat(np.arange(T), per), 2).astype(float)
    disease = np.repeat(np.array(["line", "loop"])[::-1], T * per)  # first half loop, second line
    ppts = Points(np.arange(len(X)).astype(str), np.array(["t"] * len(X)), tuple("x" * len(X)),
                  {"stage": stage, "disease": disease}, {"stage": "ordinal", "disease": "categorical"},
                  {"stage": "disease", "disease": None})
    res = UmapGeometry(**FAST).run(X[None].astype(np.float32), ppts, ["stage"])
    get = {(m.labeling, m.metric): m.estimate for m in res.measurements}
    assert get[("stage/loop", "circular_r2_gain")].value > get[("stage/loop", "circular_r2_gain_null")].ci_high
    assert get[("stage/loop", "closure_ratio")].value < 1.5 < T - 1.5 < get[("stage/line", "closure_ratio")].value


def test_template_centering_removes_template_offsets():
    rng = np.random.default_rng(4)
    pts = categorical_points(10)
    pts = Points(pts.item_ids, np.repeat(np.array(["t1", "t2"]), 15), pts.terms, pts.labels, pts.kinds, pts.group_by)
    X = rng.normal(size=(30, 8)) + np.where(pts.template_ids == "t1", 50.0, -50.0)[:, None]
    centred = UmapGeometry(center="template").centred(X, pts)
    for t in ("t1", "t2"):
        np.testing.assert_allclose(centred[pts.template_ids == t].mean(0), 0, atol=1e-4)
    np.testing.assert_allclose(UmapGeometry(center="none").centred(X, pts), X.astype(np.float32))
    with pytest.raises(MedinterpError, match="unknown center for the umap method: 'item'"):
        UmapGeometry(center="item")


@pytest.mark.parametrize("metric", ["euclidean", "cosine"])
def test_precomputed_neighbours_give_umaps_own_graph_and_embedding(metric):
    """The vectorised neighbour search replaces UMAP's per-pair Python loop without changing its result."""
    import umap

    rng = np.random.default_rng(0)
    X = np.vstack([rng.normal(0, 1, (60, 16)), rng.normal(2, 1, (60, 16))]).astype(np.float32)
    cfg = UmapGeometry(metric=metric, n_neighbors=10)
    idx, dist = cfg.neighbours(X)
    assert idx.shape == dist.shape == (120, 10) and np.all(idx[:, 0] == np.arange(120)) and np.all(dist[:, 0] == 0)
    assert np.all(np.diff(dist, axis=1) >= 0)
    own = umap.UMAP(n_neighbors=10, metric=metric, random_state=0, n_jobs=1).fit(X)
    pre = umap.UMAP(n_neighbors=10, metric=metric, random_state=0, n_jobs=1, precomputed_knn=(idx, dist)).fit(X)
    np.testing.assert_allclose(pre.graph_.toarray(), own.graph_.toarray(), atol=1e-5)
    # Same graph up to float round-off in the distances; UMAP's stochastic layout amplifies round-off,
    # so the two embeddings are compared by what the method reads from them, not coordinate by coordinate.
    labels = np.repeat([0, 1], 60)
    ours, theirs = (silhouette_score(cfg.umap(X, 2, knn), labels) for knn in (cfg.neighbours(X), None))
    assert ours > 0.5 and ours == pytest.approx(theirs, abs=0.05)
    assert UmapGeometry(metric="hellinger").neighbours(np.abs(X)) is None  # not a scikit-learn metric: UMAP's path
    assert cfg.neighbours(np.zeros((4096, 2), np.float32)) is None          # large: nearest-neighbour descent


def test_the_driver_checkpoints_every_unit_and_a_restart_runs_only_the_rest(tiny_handles, tmp_path):
    """Capture batches and layers are units of the one driver: each is checkpointed; a restart loads what was
    saved (a marked layer comes back as saved) and computes only the missing units."""
    from medinterp.cell import Cell
    from medinterp.prompts import load_prompt_set
    from medinterp.resume import Checkpoints
    from medinterp.run import drive, unit_name

    ps = load_prompt_set("drugs")
    cell = Cell(tiny_handles["llama"], ps, UmapGeometry(**FAST), (ps.templates[0].id,), batch_size=16)
    plain, info = drive(cell)
    n, n_layers = info["units"], tiny_handles["llama"].n_layers + 1
    assert n > n_layers + 1  # several capture batches, then one unit per read-out layer
    store = Checkpoints(tmp_path / "cell")
    first, _ = drive(cell, store)
    assert store.done() == {unit_name(i) for i in range(n)}
    want = {(m.labeling, m.metric, m.layer): m.estimate.value for m in plain.measurements}
    assert {(m.labeling, m.metric, m.layer): m.estimate.value for m in first.measurements} == want
    # a run killed before capture batch 0 and read-out 1 were saved; read-out 0's saved result is marked
    measurements, emb = store.load(unit_name(n - n_layers))
    store.save(unit_name(n - n_layers), ([dataclasses.replace(m, estimate=dataclasses.replace(m.estimate, value=123.0))
                                          for m in measurements], emb))
    for i in (0, n - n_layers + 1):
        (tmp_path / "cell" / f"{unit_name(i)}.pkl").unlink()
    resumed, info = drive(cell, store)
    assert info["resumed"] == n - 2
    got = {(m.labeling, m.metric, m.layer): m.estimate.value for m in resumed.measurements}
    assert got.keys() == want.keys()
    for k, v in got.items():
        assert v == 123.0 if k[2] == 0 else np.array_equal(v, want[k], equal_nan=True), k


def test_with_the_cache_a_capture_batch_is_stored_once_and_a_restart_captures_only_the_rest(tiny_handles, tmp_path,
                                                                                           monkeypatch):
    """With the activation cache, capture batches go only into the cache's partial entry (no checkpoint), layers
    are checkpointed; a run stopped after 3 batches resumes from the partial entry and ends as an uninterrupted run."""
    from medinterp.cell import Cell
    from medinterp.prompts import load_prompt_set
    from medinterp.resume import Checkpoints
    from medinterp.run import drive, unit_name

    ps = load_prompt_set("drugs")
    cell = Cell(tiny_handles["llama"], ps, UmapGeometry(**FAST), (ps.templates[0].id,), batch_size=32,
                cache_dir=tmp_path / "cache")
    plain, info = drive(dataclasses.replace(cell, cache_dir=None))
    n, n_layers = info["units"], tiny_handles["llama"].n_layers + 1
    n_model = n - n_layers
    calls: list[int] = []
    run_unit = UmapGeometry.run_unit

    def stopping(self, handle, work, i):
        if len(calls) == 3 and stop:
            raise KeyboardInterrupt  # what Ctrl-C (or any error) does mid-capture
        calls.append(i)
        return run_unit(self, handle, work, i)

    monkeypatch.setattr(UmapGeometry, "run_unit", stopping)
    store, stop = Checkpoints(tmp_path / "cell"), True
    with pytest.raises(KeyboardInterrupt):
        drive(cell, store)
    assert calls == [0, 1, 2] and store.done() == set()  # the 3 batches are in the partial entry only
    calls.clear()
    stop = False
    resumed, info = drive(cell, store)
    assert calls == list(range(3, n_model)) and info["resumed"] == 3
    assert store.done() == {unit_name(n_model + j) for j in range(n_layers)}  # the layers, never a capture batch
    want = {(m.labeling, m.metric, m.layer): m.estimate.value for m in plain.measurements}
    got = {(m.labeling, m.metric, m.layer): m.estimate.value for m in resumed.measurements}
    assert got.keys() == want.keys() and all(np.array_equal(got[k], want[k], equal_nan=True) for k in want)


def templated_points(n_items=30, templates=("t0", "t1", "t2"), classes=("a", "b", "c")):
    """n_items items under each template (template-major), as the pipeline stacks them."""
    labels = np.tile(np.repeat(np.array(classes), n_items // len(classes)), len(templates))
    terms = tuple(f"{labels[i]}term{i}" for i in range(n_items)) * len(templates)
    return Points(item_ids=np.tile(np.arange(n_items).astype(str), len(templates)),
                  template_ids=np.repeat(np.array(templates), n_items), terms=terms, labels={"cls": labels},
                  kinds={"cls": "categorical"}, group_by={"cls": None})


@pytest.mark.parametrize("center, distinct", [("template", 3), ("none", 3)])
def test_a_degenerate_layer_is_nan_with_a_note_and_identical_between_calls(center, distinct):
    """Read-out 0 under reduction=last: every prompt of a template has the same row (one row per template).

    UMAP fitted on a few distinct rows breaks its ties arbitrarily: two calls with the same seed gave
    different silhouettes. Such a layer now has NaN values (no CI) with the note, and no fit.
    """
    rng = np.random.default_rng(0)
    pts = templated_points(60)
    acts = np.empty((2, len(pts), 16), np.float32)
    acts[0] = np.repeat(rng.normal(size=(3, 16)), 60, axis=0)  # one row per template
    acts[1] = rng.normal(size=(len(pts), 16))
    method = UmapGeometry(**FAST, center=center)
    first, second = (method.run(acts, pts).measurements for _ in range(2))
    assert [(m.labeling, m.metric, m.layer, m.note) for m in first] == [(m.labeling, m.metric, m.layer, m.note)
                                                                         for m in second]
    for a, b in zip(first, second):  # NaN != NaN: compare the text a results table would hold
        assert repr(a.estimate) == repr(b.estimate), (a, b)
    layer0 = [m for m in first if m.layer == 0]
    assert {m.metric for m in layer0} == {"effective_rank", "silhouette_umap", "silhouette_umap_null", "silhouette_raw",
                                          "silhouette_raw_null"}
    # template centring leaves float rounding residue: one row per template, still degenerate
    for m in layer0:
        assert np.isnan(m.estimate.value) and np.isnan(m.estimate.ci_low) and np.isnan(m.estimate.ci_high)
        assert m.note == f"degenerate: {distinct} distinct rows" and m.estimate.n == len(pts)
    layer1 = [m for m in first if m.layer == 1]
    assert layer1 and all(np.isfinite(m.estimate.value) and m.note == "" for m in layer1)


def test_degenerate_threshold_is_a_parameter_and_a_small_set_is_not_degenerate():
    rng = np.random.default_rng(1)
    pts = categorical_points(n_per=4)  # 12 points, all distinct: fewer than min_distinct_rows, but every row differs
    acts = rng.normal(size=(1, len(pts), 8)).astype(np.float32)
    res = UmapGeometry(**FAST, n_neighbors=5).run(acts, pts)
    assert all("degenerate" not in m.note for m in res.measurements if m.layer == 0)
    one = np.zeros_like(acts)  # a single distinct row
    res = UmapGeometry(**FAST, n_neighbors=5, center="none").run(one, pts)
    assert {m.note for m in res.measurements if m.layer == 0} == {"degenerate: 1 distinct row"}
    pairs = np.repeat(acts[:, :6], 2, axis=1)  # 6 distinct rows, each twice
    res = UmapGeometry(**FAST, n_neighbors=5, center="none").run(pairs, pts)
    assert {m.note for m in res.measurements if m.layer == 0} == {"degenerate: 6 distinct rows"}
    res = UmapGeometry(**FAST, n_neighbors=5, center="none", min_distinct_rows=6).run(pairs, pts)
    assert all("degenerate" not in m.note and np.isfinite(m.estimate.value) for m in res.measurements if m.layer == 0)
    with pytest.raises(MedinterpError, match="min_distinct_rows must be >= 1"):
        UmapGeometry(min_distinct_rows=0)


def test_spelling_control_is_scored_on_unique_terms_not_on_copies_per_template():
    """Planted: class-free names; repeated once per template, copies at distance 0 inflate the silhouette."""
    from medinterp.metrics import surface_features

    rng = np.random.default_rng(5)
    names = ["".join(rng.choice(list("abcdefghijklmnopqrstuvwxyz"), 7)) for _ in range(30)]
    classes = np.repeat(np.array(["x", "y", "z"]), 10)
    want = silhouette_score(surface_features(names), classes, metric="cosine")  # one row per item
    inflated = silhouette_score(surface_features(names * 4), np.tile(classes, 4), metric="cosine")
    assert inflated > want + 0.05  # what the old code reported under 4 templates
    for n_t in (1, 4):
        pts = Points(item_ids=np.tile(np.arange(30).astype(str), n_t),
                     template_ids=np.repeat(np.array([f"t{i}" for i in range(n_t)]), 30), terms=tuple(names) * n_t,
                     labels={"cls": np.tile(classes, n_t)}, kinds={"cls": "categorical"}, group_by={"cls": None})
        method = UmapGeometry(**FAST)
        [surface] = [m for m in method.baselines(pts, ["cls"]) if m.metric == "silhouette_surface"]
        assert surface.estimate.value == pytest.approx(want, abs=1e-12) and surface.estimate.n == 30, n_t


def test_spelling_control_with_one_item_per_class_is_nan_with_a_reason():
    stage = np.tile(np.arange(3).astype(float), 4)  # one item per stage, 4 templates
    pts = Points(item_ids=np.tile(np.array(["s0", "s1", "s2"]), 4), template_ids=np.repeat(np.array(list("abcd")), 3),
                 terms=("mild", "moderate", "severe") * 4, labels={"stage": stage}, kinds={"stage": "categorical"},
                 group_by={"stage": None})
    [surface] = UmapGeometry(**FAST).baselines(pts, ["stage"])
    assert np.isnan(surface.estimate.value) and surface.note == "undefined: 3 unique terms in 3 classes"


def test_layers_whose_clustering_spelling_explains_are_noted_and_summarised():
    """Planted: the class is in the names' stems (-olol, -pril, -statin), so spelling alone separates the
    classes; layer 0 separates them weakly (flagged), layer 1 strongly (not flagged)."""
    stems = ("olol", "pril", "statin")
    names = [f"{p}{s}" for s in stems for p in ("meto", "aten", "biso", "carve", "nado", "ena", "lisi", "rami")]
    classes = np.repeat(np.array(stems), 8)
    pts = Points(item_ids=np.arange(24).astype(str), template_ids=np.array(["t"] * 24), terms=tuple(names),
                 labels={"cls": classes}, kinds={"cls": "categorical"}, group_by={"cls": None})
    rng = np.random.default_rng(2)
    centers = rng.normal(size=(3, 16))
    k = np.searchsorted(stems, classes, sorter=np.argsort(stems))
    acts = np.stack([centers[k] * 0.3 + rng.normal(size=(24, 16)), centers[k] * 20 + rng.normal(size=(24, 16))])
    res = UmapGeometry(**FAST, n_neighbors=5).run(acts.astype(np.float32), pts)
    get = {(m.metric, m.layer): m for m in res.measurements}
    c = get[("silhouette_surface", -1)].estimate.value
    assert c > 0.2
    weak = get[("silhouette_raw", 0)]
    assert 0 < weak.estimate.value <= 2 * c
    assert weak.note == f"explained_by_spelling: surface {c:.3f} >= 0.5 x {weak.estimate.value:.3f}"
    flagged = {}
    for metric in ("silhouette_umap", "silhouette_raw"):
        assert get[(metric, 1)].estimate.value > 2 * c and get[(metric, 1)].note == ""
        if get[(metric, 0)].estimate.value <= 2 * c:
            flagged[metric] = [0]
        else:
            assert get[(metric, 0)].note == ""
    assert res.artifacts["summary"] == {"spelling_fraction": 0.5, "explained_by_spelling": {"cls": flagged}}
    assert all(m.note == "" for m in UmapGeometry(**FAST, n_neighbors=5, spelling_fraction=1.0).run(
        acts.astype(np.float32), pts).measurements if m.layer == 1)


def test_umap_of_near_duplicate_cliques_is_a_function_of_its_inputs():
    """Two clusters of 100 points with 4 distinct rows each (87/9/3/1 copies, 1e-6 apart: read-out 1 of
    tiny_gemma3 after template centring) make ARPACK restart inside UMAP's spectral initialisation; the
    restart vectors are seeded, so two fits are equal (unseeded, scipy draws them from OS entropy)."""
    rng = np.random.default_rng(0)

    def clique(center: float) -> np.ndarray:
        return np.repeat(center + 1e-6 * rng.normal(size=(4, 8)), [87, 9, 3, 1], axis=0)

    X = np.vstack([clique(0.0), clique(10.0), rng.normal(size=(100, 8)) - 10]).astype(np.float32)
    cfg = UmapGeometry(**FAST)
    knn = cfg.neighbours(X)
    assert np.array_equal(cfg.umap(X, 30, knn), cfg.umap(X, 30, knn))



def test_run_is_baselines_then_measure_layer_per_layer_then_combine_in_workers_or_here():
    """The units the driver runs one by one give run()'s result; two worker processes give the same numbers."""
    rng = np.random.default_rng(4)
    pts = categorical_points(n_per=12)
    acts = rng.normal(size=(3, len(pts), 8)).astype(np.float32)
    acts[2] += 5 * (pts.labels["cls"] == "a")[:, None]
    method = UmapGeometry(**FAST)
    labelings = method.labelings(pts, None)
    units = method.combine(method.baselines(pts, labelings),
                           [method.measure_layer(layer, acts[layer], pts, labelings) for layer in range(3)])
    rows = [(m.labeling, m.metric, m.layer, m.estimate, m.note) for m in units.measurements]
    for n_jobs in (1, 2):
        res = dataclasses.replace(method, n_jobs=n_jobs).run(acts, pts)
        assert [(m.labeling, m.metric, m.layer, m.estimate, m.note) for m in res.measurements] == rows
        for a, b in zip(res.artifacts["embedding_2d"], units.artifacts["embedding_2d"], strict=True):
            np.testing.assert_array_equal(a, b)
        assert res.artifacts["summary"] == units.artifacts["summary"]
    assert {m.layer for m in units.measurements} == {-1, 0, 1, 2}
    with pytest.raises(MedinterpError, match=r"unknown labeling\(s\) \['organ'\]; valid: cls"):
        method.labelings(pts, ["organ"])


def test_the_device_path_equals_scikit_learn_on_cpu_tensors(monkeypatch):
    """measure_layer(device=...) (torch kNN, distances, silhouettes: the GPU path) forced onto the CPU: the same rows,
    the same values to 1e-6 relative (float round-off). The kNN graph is the same here (no near-ties), so even the
    embedding metrics agree; in general near-tied neighbours may order differently."""
    rng = np.random.default_rng(7)
    pts = categorical_points(n_per=15)
    rnd = rng.permutation(pts.labels["cls"])
    pts = Points(pts.item_ids, pts.template_ids, pts.terms, {"cls": pts.labels["cls"], "rnd": rnd},
                 {"cls": "categorical", "rnd": "categorical"}, {"cls": None, "rnd": None})
    X = (rng.normal(size=(len(pts), 12)) + 4 * rng.normal(size=(3, 12))[np.searchsorted(["a", "b", "c"], pts.labels["cls"])])
    from medinterp.metrics import device as device_metrics

    cfg = UmapGeometry(**FAST, contrasts=[["cls", "rnd"]])
    want, want_emb = cfg.measure_layer(1, X.astype(np.float32), pts, ["cls", "rnd"])
    calls = {"silhouette_np": 0, "distances_np": 0, "neighbours": 0}
    for name in calls:  # count the torch calls: the device path must be the one measured
        def spy(*args, _f=getattr(device_metrics, name), _name=name, **kwargs):
            calls[_name] += 1
            return _f(*args, **kwargs)
        monkeypatch.setattr(device_metrics, name, spy)
    got, got_emb = cfg.measure_layer(1, X.astype(np.float32), pts, ["cls", "rnd"], device="cpu")
    # kNN once; distances: raw and UMAP; s(i): 2 labelings x 2 spaces x (1 + n_perm) + the 4 contrast inputs
    assert calls == {"neighbours": 1, "distances_np": 2, "silhouette_np": 2 * 2 * (1 + FAST["n_perm"]) + 4}
    assert [(m.labeling, m.metric, m.note) for m in got] == [(m.labeling, m.metric, m.note) for m in want]
    assert {m.metric for m in want} >= {"silhouette_raw", "silhouette_umap_null", "silhouette_raw_diff"}
    for a, b in zip(want, got):
        np.testing.assert_allclose([b.estimate.value, b.estimate.ci_low, b.estimate.ci_high],
                                   [a.estimate.value, a.estimate.ci_low, a.estimate.ci_high], rtol=1e-6, atol=1e-7,
                                   err_msg=f"{a.labeling} {a.metric}")
    np.testing.assert_allclose(got_emb, want_emb, rtol=1e-5, atol=1e-5)
