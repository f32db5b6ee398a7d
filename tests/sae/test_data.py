"""The SAE data path: corpus sources, packing into contexts (position 0 dropped), the sharded activation cache
(rows equal the capture path's, the scale recorded), and the deterministic, resumable batch stream."""
from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest
import torch

from medinterp.errors import MedinterpError
from medinterp.sae import activations as act
from medinterp.sae.activations import ActivationStore, TokenStream, cache_activations
from medinterp.sae.corpus import Document, check_corpus_sources, file_documents, hpo_documents, icd10cm_documents
from medinterp.sae.packing import pack, token_mask


class WordTokenizer:
    """Words -> ids (a stand-in for a real tokenizer): BOS 1, EOS 2, pad 0, word w -> 10 + its first-seen index."""

    def __init__(self, bos=1):
        self.bos_token_id, self.eos_token_id, self.pad_token_id = bos, 2, 0
        self.vocab: dict[str, int] = {}

    def __call__(self, texts, add_special_tokens=False):
        assert add_special_tokens is False
        return {"input_ids": [[self.vocab.setdefault(w, 10 + len(self.vocab)) for w in t.split()] for t in texts]}


# ------------------------------------------------------------------------------------------ corpus
def test_user_files_one_document_per_line_and_bad_files_in_one_line(tmp_path):
    txt = tmp_path / "notes.txt"
    txt.write_text("first note\n\n  \nsecond note\n")
    docs, info = file_documents(str(txt))
    assert [d.text for d in docs] == ["first note", "second note"] and info["documents"] == 2
    assert info["sha256"] == hashlib.sha256(txt.read_bytes()).hexdigest()
    jsonl = tmp_path / "notes.jsonl"
    jsonl.write_text('{"text": "a"}\n{"text": "b", "id": 3}\n')
    assert [d.text for d in file_documents(str(jsonl))[0]] == ["a", "b"]
    (tmp_path / "empty.txt").write_text("\n \n")
    (tmp_path / "bad.jsonl").write_text('{"text": "a"}\nnot json\n')
    (tmp_path / "notext.jsonl").write_text('{"body": "a"}\n')
    for name, match in [("empty.txt", "is empty"), ("bad.jsonl", "line 2 is not JSON"),
                        ("notext.jsonl", 'line 1 has no "text"'), ("missing.txt", "file not found")]:
        with pytest.raises(MedinterpError, match=match):
            file_documents(str(tmp_path / name))
    with pytest.raises(MedinterpError, match="neither a built-in source .icd10cm, hpo, prompts."):
        check_corpus_sources(["pubmed"])
    with pytest.raises(MedinterpError, match="file not found"):
        check_corpus_sources([str(tmp_path / "gone.jsonl")])
    with pytest.raises(MedinterpError, match="sae.corpus is empty"):
        check_corpus_sources([])


def test_builtin_sources_hold_the_ontologies_with_their_releases():
    icd, info = icd10cm_documents()
    assert Document("icd10cm", "Cholera due to Vibrio cholerae 01, biovar cholerae (ICD-10-CM A00.0)") in icd
    assert len(icd) == info["documents"] > 90_000 and info["release"].endswith(".xml")
    hpo, info = hpo_documents()
    assert info["release"].startswith("hp/releases/") and len(hpo) == info["documents"] > 15_000
    assert any(d.text.startswith("Autosomal dominant inheritance: A mode of inheritance") for d in hpo)
    assert not any(d.text == "All" or d.text.startswith("obsolete ") for d in hpo)  # the root; obsolete terms


# ------------------------------------------------------------------------------------------ packing
def test_packing_runs_documents_on_with_separators_and_bos_first():
    tok = WordTokenizer()
    docs = [Document("s", "a b c"), Document("t", "d e"), Document("s", "never read")]
    packed = pack(tok, docs, ctx_len=4, n_contexts=2)
    a, b, c, d, e = (tok.vocab[w] for w in "abcde")
    # stream: a b c EOS d e EOS ... ; each context: BOS + 3 stream tokens
    assert packed.input_ids.tolist() == [[1, a, b, c], [1, 2, d, e]]
    assert packed.mask.tolist() == [[1] * 4] * 2
    assert packed.documents == 2 and packed.documents_per_source == {"s": 1, "t": 1}
    assert packed.tokens_per_source == {"s": 4, "t": 2}  # the 3 + EOS of "a b c"; "d e" (its EOS cut)
    assert packed.sha256 == hashlib.sha256(b"s\ta b c\nt\td e\n").hexdigest()
    assert token_mask(packed.mask).tolist() == [[False, True, True, True]] * 2  # position 0 dropped


def test_a_short_corpus_pads_the_last_context_and_the_mask_skips_pads():
    tok = WordTokenizer(bos=None)
    packed = pack(tok, [Document("s", "a b c d e")], ctx_len=4, n_contexts=5)
    assert packed.input_ids.shape == (2, 4)  # 6 tokens (5 + EOS): one full context and a padded one
    assert packed.mask.tolist() == [[1, 1, 1, 1], [1, 1, 0, 0]]
    assert packed.input_ids[1].tolist() == [tok.vocab["e"], 2, 0, 0]
    assert token_mask(packed.mask).tolist() == [[False, True, True, True], [False, True, False, False]]
    left = torch.tensor([[0, 0, 1, 1, 1]])  # left padding: the first REAL token is dropped
    assert token_mask(left).tolist() == [[False, False, False, True, True]]


# ------------------------------------------------------------------------------------------ the cache
@pytest.fixture(scope="module")
def tiny(cache_dir):
    from medinterp.models import ModelSpec, load_model

    return load_model(ModelSpec(name="tiny_gemma3", source="tiny", family="gemma3", n_layers=4), "cpu", cache_dir)


def contexts(handle, n=5, ctx_len=12):
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(10, 1000, (n, ctx_len), generator=g)
    ids[:, 0] = handle.tokenizer.bos_token_id or 1
    mask = torch.ones_like(ids)
    mask[-1, 7:] = 0  # a padded last context
    return ids, mask


def test_cache_rows_are_the_capture_paths_at_the_sae_tokens_across_shards(tiny, tmp_path):
    from medinterp.capture.residual import capture_batch

    ids, mask = contexts(tiny)
    store = cache_activations(tiny, ids, mask, [1, 3], tmp_path / "c", batch_contexts=2, shard_tokens=13,
                              progress=False)
    keep = token_mask(mask)
    assert store.n_tokens == int(keep.sum()) == 4 * 11 + 6 and store.shard_sizes == [13, 13, 13, 11]
    ref = capture_batch(tiny, act.token_batch(ids, mask), [1, 3], None)  # (B, T, d) each
    for layer, hidden in zip([1, 3], ref):
        x = store.rows(layer, np.arange(store.n_tokens))
        torch.testing.assert_close(x, hidden[keep], atol=1e-5, rtol=1e-5)
        perm = np.random.default_rng(0).permutation(store.n_tokens)
        torch.testing.assert_close(store.rows(layer, perm), x[perm])  # any order, across shards
        msn = float((hidden[keep].double() ** 2).sum(-1).mean())
        assert store.mean_squared_norm(layer) == pytest.approx(msn, rel=1e-6)
        assert store.scale(layer) == pytest.approx((tiny.d_model / msn) ** 0.5, rel=1e-6)
        scaled = torch.cat(list(store.batches(layer, 16, store.scale(layer))))
        assert float((scaled.double() ** 2).sum(-1).mean()) == pytest.approx(tiny.d_model, rel=1e-5)
    index = store.array("index")
    assert (index[:, 1] > 0).all() and index.tolist() == keep.nonzero().tolist()
    assert store.array("token_ids").tolist() == ids[keep].tolist()
    assert (store.array("token_types") == act.TEXT).all()
    assert json.loads((tmp_path / "c" / "meta.json").read_text())["layers"] == [1, 3]


def test_a_killed_capture_leaves_no_complete_cache_and_a_finished_one_is_reused(tiny, tmp_path, monkeypatch):
    ids, mask = contexts(tiny)
    real = act.capture_batch
    calls = []

    def dies_on_second(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(act, "capture_batch", dies_on_second)
    with pytest.raises(KeyboardInterrupt):
        cache_activations(tiny, ids, mask, [2], tmp_path / "c", batch_contexts=2, progress=False)
    assert not (tmp_path / "c").exists() and (tmp_path / "c.partial").is_dir()
    store = cache_activations(tiny, ids, mask, [2], tmp_path / "c", batch_contexts=2, progress=False)
    assert not (tmp_path / "c.partial").exists()
    monkeypatch.setattr(act, "capture_batch", lambda *a, **k: pytest.fail("a complete cache was captured again"))
    again = cache_activations(tiny, ids, mask, [2], tmp_path / "c", progress=False)
    torch.testing.assert_close(again.rows(2, np.arange(again.n_tokens)), store.rows(2, np.arange(store.n_tokens)))
    with pytest.raises(MedinterpError, match=r"sae.layer \[7\] out of range for tiny_gemma3; valid: 0..4"):
        cache_activations(tiny, ids, mask, [7], tmp_path / "d", progress=False)


def test_a_store_of_an_older_format_is_captured_again(tiny, tmp_path, monkeypatch, caplog):
    """A complete store written by older code (format 1: no per-row token types) is not reused as if current."""
    ids, mask = contexts(tiny)
    store = cache_activations(tiny, ids, mask, [2], tmp_path / "c", batch_contexts=2, progress=False)
    meta = json.loads((tmp_path / "c" / "meta.json").read_text())
    assert meta["format"] == act.FORMAT_VERSION == 2
    old = {k: v for k, v in meta.items() if k != "rows_per_type"} | {"format": 1}
    (tmp_path / "c" / "meta.json").write_text(json.dumps(old))
    again = cache_activations(tiny, ids, mask, [2], tmp_path / "c", batch_contexts=2, progress=False)
    assert again.meta["rows_per_type"] == meta["rows_per_type"] and "has format 1, this code writes 2" in caplog.text
    torch.testing.assert_close(again.rows(2, np.arange(again.n_tokens)), store.rows(2, np.arange(store.n_tokens)))


def test_the_stream_is_a_function_of_the_batch_index_and_each_epoch_reads_every_row_once(tiny, tmp_path):
    ids, mask = contexts(tiny)
    store = cache_activations(tiny, ids, mask, [2], tmp_path / "c", shard_tokens=16, progress=False)
    stream = TokenStream(store, 2, batch_size=10, seed=3, scale=2.0)
    assert stream.per_epoch == 5  # 50 rows
    batches = [next(stream) for _ in range(12)]
    every = store.rows(2, np.arange(store.n_tokens)) * 2.0
    epoch0 = torch.cat(batches[:5])
    assert sorted(map(tuple, epoch0.tolist())) == sorted(map(tuple, every.tolist()))
    assert not torch.equal(batches[0], batches[5])  # a fresh permutation per epoch
    resumed = TokenStream(store, 2, batch_size=10, seed=3, scale=2.0, start_batch=7)
    for b in range(7, 12):
        torch.testing.assert_close(next(resumed), batches[b])
    with pytest.raises(MedinterpError, match="sae.batch_size .64. is larger than the 50 cached"):
        TokenStream(store, 2, batch_size=64)
    assert isinstance(ActivationStore(tmp_path / "c").rows(2, [0]), torch.Tensor)


# ------------------------------------------------------------------------------------------ image prompts (VLMs)
@pytest.fixture(scope="module")
def tiny_vlm(cache_dir):
    from medinterp.models import ModelSpec, load_model

    return load_model(ModelSpec(name="tiny_llava", source="tiny", family="llava", n_layers=4), "cpu", cache_dir)


def xray_prompts(n=5):
    from medinterp.prompts import load_prompt_set

    prompt_set = load_prompt_set("synthetic_xray")
    return prompt_set.prompts(prompt_set.templates[0].id)[:n] + prompt_set.prompts(prompt_set.templates[-1].id)[:2]


def test_image_prompt_rows_are_the_multimodal_capture_at_their_typed_tokens(tiny_vlm, tmp_path, monkeypatch):
    from medinterp.capture.images import capture_image_batch, encode_images, type_masks
    from medinterp.capture.residual import capture_batch

    ids, mask = contexts(tiny_vlm, n=3)
    prompts = xray_prompts()
    store = cache_activations(tiny_vlm, ids, mask, [0, 2], tmp_path / "all", batch_contexts=2, shard_tokens=50,
                              progress=False, images=prompts, tokens="all")
    batch = encode_images(tiny_vlm, prompts)  # all 7 prompts at once (the cache: 2 at a time)
    masks = type_masks(batch.inputs["input_ids"], batch.token_types, tiny_vlm.tokenizer.all_special_ids)
    first = batch.inputs["attention_mask"].argmax(-1)
    sel = masks["all"].clone()
    sel[torch.arange(7), first] = False
    grid = tiny_vlm.parts.vision.grid.n_tokens
    image_first = int((batch.token_types[torch.arange(7), first] == 1).sum())  # prompts opening on the image
    keep = token_mask(mask)
    n_text = int(keep.sum())
    assert store.meta["rows_per_type"] == {"text": n_text + int((sel & masks["text"]).sum()),
                                           "image": 7 * grid - image_first}
    text_ref = capture_batch(tiny_vlm, act.token_batch(ids, mask), [0, 2], None)
    image_ref = capture_image_batch(tiny_vlm, batch, [0, 2], None)  # (7, T, d): read-out 0 = input of block 0
    for i, layer in enumerate([0, 2]):
        want = torch.cat([text_ref[i][keep], image_ref[i][sel]])
        torch.testing.assert_close(store.rows(layer, np.arange(store.n_tokens)), want, atol=1e-5, rtol=1e-5)
    types = store.array("token_types")
    assert (types[:n_text] == act.TEXT).all() and types[n_text:].tolist() == batch.token_types[sel].tolist()
    index = store.array("index")
    assert index[n_text:].tolist() == [[3 + b, t] for b, t in sel.nonzero().tolist()]  # prompt i = context 3 + i
    image_id = tiny_vlm.model.config.image_token_id
    assert (store.array("token_ids")[types == act.IMAGE] == image_id).all()
    assert not np.isin(store.array("token_ids")[n_text:][types[n_text:] == act.TEXT],
                       tiny_vlm.tokenizer.all_special_ids).any()

    monkeypatch.setattr(act, "capture_batch", lambda *a, **k: pytest.fail("tokens=image captured the text contexts"))
    only = cache_activations(tiny_vlm, ids, mask, [2], tmp_path / "image", batch_contexts=3, progress=False,
                             images=prompts, tokens="image")
    assert (only.array("token_types") == act.IMAGE).all() and only.n_tokens == 7 * grid - image_first
    all_rows = store.rows(2, np.nonzero(types == act.IMAGE)[0])
    torch.testing.assert_close(only.rows(2, np.arange(only.n_tokens)), all_rows, atol=1e-5, rtol=1e-5)
    assert only.meta["tokens"] == "image" and only.meta["n_image_prompts"] == 7


def test_image_tokens_need_image_prompts_on_a_vision_language_model(tiny, tiny_vlm, tmp_path):
    ids, mask = contexts(tiny, n=2)
    with pytest.raises(MedinterpError, match=r"^sae.tokens=image needs image prompts: sae.images=\[") as err:
        cache_activations(tiny_vlm, ids, mask, [1], tmp_path / "a", progress=False, tokens="image")
    assert "\n" not in str(err.value)
    with pytest.raises(MedinterpError, match="sae.images holds images, but model 'tiny_gemma3' is a text-only model"):
        cache_activations(tiny, ids, mask, [1], tmp_path / "b", progress=False, images=xray_prompts(1))
    with pytest.raises(MedinterpError, match="tokens"):
        cache_activations(tiny, ids, mask, [1], tmp_path / "c", progress=False, tokens="pixels")
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


@pytest.mark.parametrize("tokens", ["all", "image"])
def test_image_prompt_codes_are_the_max_of_the_cached_rows_per_prompt(tiny_vlm, tmp_path, tokens):
    from medinterp.sae import SAEConfig, SparseAutoencoder
    from medinterp.sae.prompt_codes import image_prompt_codes

    ids, mask = contexts(tiny_vlm, n=1)
    prompts = xray_prompts()
    store = cache_activations(tiny_vlm, ids[:0], mask[:0], [2], tmp_path / "c", progress=False, images=prompts,
                              tokens=tokens)
    sae = SparseAutoencoder(SAEConfig(tiny_vlm.d_model, 96, 6, "topk"), seed=1)
    codes = image_prompt_codes(tiny_vlm, sae, prompts, 2, scale=1.5, tokens=tokens, batch_size=3, progress=False)
    with torch.no_grad():
        f = sae.encode(store.rows(2, np.arange(store.n_tokens)) * 1.5).numpy()
    prompt_of = store.array("index")[:, 0]
    want = np.stack([f[prompt_of == i].max(0) for i in range(len(prompts))])
    assert (want > 0).any()
    np.testing.assert_allclose(codes, want, rtol=1e-5, atol=1e-6)
