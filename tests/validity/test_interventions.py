"""Interventions on sets of blocks, checked against hand-built references on tiny random models."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from helpers import without_block
from medinterp.errors import MedinterpError
from medinterp.hooks import forward_hooks, record
from medinterp.validity.interventions import class_mean_direction, identity, mean_update, mean_updates, steer
from medinterp.validity.lora import LoraBudget, LoraSteps, lora

TEXTS = ["The patient was given aspirin for", "A child of six presented with a fever and", "Dose: two tablets"]


def _logits(handle, texts=TEXTS):
    enc = handle.tokenizer(texts, padding=True, return_tensors="pt")
    with torch.inference_mode():
        return handle.model(**enc).logits


def _block_io(handle, block, texts=TEXTS):
    """(input, output) hidden states of one block on ``texts``."""
    store = {}
    parts = handle.parts
    enc = handle.tokenizer(texts, padding=True, return_tensors="pt")
    below = parts.layers[block - 1] if block else parts.embed
    with torch.inference_mode(), forward_hooks([(below, record(store, "in")), (parts.layers[block], record(store, "out"))]):
        handle.model(**enc)
    return store["in"], store["out"]


@pytest.mark.parametrize("family", ["llama", "gemma3"])
def test_identity_on_two_blocks_equals_the_model_without_them(tiny_handles, family):
    handle = tiny_handles[family]
    intact = _logits(handle)
    with identity(handle.parts, [2, 1]):
        got = _logits(handle)
    cut = without_block(without_block(handle.model, 2), 1)
    enc = handle.tokenizer(TEXTS, padding=True, return_tensors="pt")
    with torch.inference_mode():
        want = cut(**enc, use_cache=False).logits
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
    assert not torch.allclose(got, intact, atol=1e-3)
    torch.testing.assert_close(_logits(handle), intact, rtol=0, atol=0)  # restored


def test_mean_updates_and_mean_ablation_against_a_hand_computation(tiny_handles):
    handle = tiny_handles["llama"]
    tok = handle.tokenizer
    enc = tok(TEXTS, padding=True, return_tensors="pt")
    x_in, x_out = _block_io(handle, 1)
    mask = enc["attention_mask"].bool() & (enc["input_ids"] != tok.bos_token_id)
    want = (x_out - x_in).double()[mask].mean(0).float()  # (D,)
    updates = mean_updates(handle, TEXTS, [1, 3], batch_size=2)  # two batches: the mean is over all tokens
    torch.testing.assert_close(updates[1], want, rtol=1e-5, atol=1e-6)
    with mean_update(handle.parts, {1: updates[1]}):
        y_in, y_out = _block_io(handle, 1)
    torch.testing.assert_close(y_out, y_in + updates[1], rtol=0, atol=0)  # output = input + ū at every position
    torch.testing.assert_close(_block_io(handle, 1)[1], x_out, rtol=0, atol=0)  # restored


def test_steering_adds_alpha_times_the_direction_and_alpha_zero_changes_nothing(tiny_handles):
    handle = tiny_handles["qwen3"]
    intact = _logits(handle)
    x_in, x_out = _block_io(handle, 2)
    v = class_mean_direction(x_out[0], x_out[1])  # any (D,) direction
    with steer(handle.parts, {2: v}, 0.0):
        torch.testing.assert_close(_logits(handle), intact, rtol=0, atol=0)
    with steer(handle.parts, {2: v}, 3.0):
        _, y_out = _block_io(handle, 2)
        steered = _logits(handle)
    torch.testing.assert_close(y_out, x_out + 3.0 * v, rtol=0, atol=0)
    assert (steered - intact).abs().max() > 1e-3
    torch.testing.assert_close(_logits(handle), intact, rtol=0, atol=0)


def test_class_mean_direction():
    a = torch.tensor([[1.0, 2.0], [3.0, 4.0]])
    b = torch.tensor([[0.0, 1.0]])
    assert class_mean_direction(a, b).tolist() == [2.0, 2.0]


def test_lora_on_chosen_blocks_learns_and_leaves_the_model_intact(tiny_handles):
    handle = tiny_handles["llama"]
    model = handle.model
    intact = _logits(handle)
    flags = [p.requires_grad for p in model.parameters()]
    examples = [(f"Question {i}: the answer is", " yes") for i in range(8)]
    target = handle.tokenizer(" yes", add_special_tokens=False)["input_ids"][0]

    def logp_yes():
        enc = handle.tokenizer([p for p, _ in examples], padding=True, return_tensors="pt")
        with torch.inference_mode():
            out = model(**enc).logits[:, -1].log_softmax(-1)[:, target]
        return float(out.mean())

    before = logp_yes()
    budget = LoraBudget(rank=2, steps=15, lr=5e-2, batch_size=4, objective="tokens")
    with lora(handle, [1, 2], LoraSteps(handle, examples, budget)) as report:
        after = logp_yes()
        adapted = _logits(handle)
    assert report.blocks == (1, 2) and len(report.losses) == 15 and report.tokens > 0
    assert report.losses[-1] < report.losses[0] and after > before + 1.0
    # every Linear of the two blocks, rank 2: r * (in + out) parameters each
    per_block = sum(2 * (m.in_features + m.out_features) for m in handle.parts.layers[1].modules()
                    if isinstance(m, torch.nn.Linear))
    assert report.n_params == 2 * per_block
    assert not torch.allclose(adapted, intact)
    torch.testing.assert_close(_logits(handle), intact, rtol=0, atol=0)  # adapters removed
    assert [p.requires_grad for p in model.parameters()] == flags
    assert not any("lora" in name for name, _ in model.named_modules())


@pytest.mark.parametrize("family", ["llama", "gemma3"])
def test_replaying_the_blocks_below_an_intervention_equals_the_full_forward(tiny_handles, family):
    from medinterp.prompts import load_prompt_set
    from medinterp.validity.probe import block_outputs, build_probe, choice_logits, probe_spec

    handle = tiny_handles[family]
    probe = build_probe(probe_spec("drugs"), load_prompt_set("drugs"), handle.tokenizer, 12)
    prefix = block_outputs(handle, probe, batch_size=5)  # 3 batches, the last one short
    x_in, x_out = _block_io(handle, 2)
    v = class_mean_direction(x_out[0], x_out[1])
    for name, intervention in [("steer", lambda: steer(handle.parts, {2: v, 3: v}, 2.0)),
                               ("identity", lambda: identity(handle.parts, (2, 3)))]:
        with intervention():
            full = choice_logits(handle, probe, 5)
            replayed = choice_logits(handle, probe, 5, start_block=2, prefix=prefix)
            wrong = choice_logits(handle, probe, 5, start_block=3, prefix=prefix)  # replays block 2's intact output
        torch.testing.assert_close(replayed, full, rtol=0, atol=0, msg=name)
        if name == "identity":  # (a steering hook still fires on a replayed block's output)
            assert (wrong - full).abs().max() > 1e-4
    with pytest.raises(ValueError, match="needs the prefix"):
        choice_logits(handle, probe, 5, start_block=1)


@pytest.mark.parametrize("family", ["llama", "gemma3"])
def test_the_answer_loss_equals_the_whole_sequence_loss_of_transformers(tiny_handles, family):
    """Left padding and logits at the last K + 1 positions give the loss of ``labels=`` on right-padded rows."""
    from medinterp.validity.lora import LoraBudget, _batches, answer_loss

    handle = tiny_handles[family]
    examples = [("The patient was given aspirin for", " pain relief today"), ("Dose: two", " tablets"),
                ("A child of six presented with a fever and", " a rash")]
    ids, mask, targets = next(_batches(handle, examples, LoraBudget(batch_size=3, seed=1)))
    assert (mask[:, -1] == 1).all() and (targets != -100).sum() == sum(
        len(handle.tokenizer(a, add_special_tokens=False)["input_ids"]) for _, a in examples)
    rows, labels = [], []
    for r in range(3):  # the same rows, right padded, with labels on the answer tokens only
        real = ids[r][mask[r] == 1]
        n = int((targets[r] != -100).sum())
        rows.append(real)
        labels.append(torch.cat([torch.full((len(real) - n,), -100), real[len(real) - n:]]))
    width = max(len(x) for x in rows)
    right = torch.stack([torch.nn.functional.pad(x, (0, width - len(x)), value=0) for x in rows])
    right_mask = torch.stack([torch.nn.functional.pad(torch.ones_like(x), (0, width - len(x))) for x in rows])
    right_labels = torch.stack([torch.nn.functional.pad(y, (0, width - len(y)), value=-100) for y in labels])
    with torch.inference_mode():
        reference = handle.model(input_ids=right, attention_mask=right_mask, labels=right_labels).loss
        mine = answer_loss(handle, ids, mask, targets)
    torch.testing.assert_close(mine, reference, rtol=1e-5, atol=1e-6)
    with torch.inference_mode():  # a target shifted by one position is a different loss
        assert abs(float(answer_loss(handle, ids, mask, targets.roll(1, dims=1))) - float(reference)) > 1e-3


def test_the_choice_objective_learns_the_probed_task_and_equals_a_hand_cross_entropy(tiny_handles):
    from medinterp.validity.lora import LoraBudget, _choice_batches, choice_loss

    handle = tiny_handles["llama"]
    tok = handle.tokenizer
    yes, no = (tok(w, add_special_tokens=False)["input_ids"][0] for w in (" yes", " no"))
    words = {"apple": " yes", "bread": " yes", "rice": " yes", "soup": " yes",
             "stone": " no", "glass": " no", "iron": " no", "sand": " no"}
    examples = [(f"Can you eat {w}? The answer is", a) for w, a in words.items()]
    choices = torch.tensor([yes, no])
    ids, mask, targets = next(_choice_batches(handle, examples, [yes, no], LoraBudget(batch_size=8)))
    with torch.inference_mode():  # reference: the model's own last-token logits, restricted to the two choices
        rows = [tok(p, return_tensors="pt") for p, _ in examples]
        last = torch.stack([handle.model(**r).logits[0, -1, choices] for r in rows])
        want = torch.tensor([0 if a == " yes" else 1 for _, a in examples])
        reference = torch.nn.functional.cross_entropy(last.float(), want)
        mine = choice_loss(handle, ids, mask, targets, choices)  # one batch of all 8: the mean is order-free
    assert sorted(targets.tolist()) == sorted(want.tolist())
    torch.testing.assert_close(mine, reference, rtol=1e-5, atol=1e-6)

    def accuracy():
        with torch.inference_mode():
            return float(((torch.stack([handle.model(**r).logits[0, -1, choices] for r in rows]).argmax(1)
                           == want).float().mean()))

    before = accuracy()
    budget = LoraBudget(rank=4, steps=40, lr=1e-2, batch_size=8)
    with lora(handle, [1, 2], LoraSteps(handle, examples, budget, [yes, no])) as report:
        trained = accuracy()
    assert before <= 0.75 and trained >= 0.875 and report.losses[-1] < 0.5 * report.losses[0]
    with pytest.raises(MedinterpError, match="objective 'choice' needs the probe's choice_ids"):
        LoraSteps(handle, examples, LoraBudget())
    with pytest.raises(MedinterpError, match="not one of the probe's choices"):
        next(_choice_batches(handle, [("Question", " maybe")], [yes, no], LoraBudget()))
    with pytest.raises(MedinterpError, match=r"unknown lora.objective 'both'; valid: choice, tokens"):
        LoraBudget(objective="both")


@pytest.mark.parametrize("family, objective", [("llama", "choice"), ("gemma3", "tokens")])
def test_lora_replaying_the_intact_blocks_below_gives_the_same_training(tiny_handles, family, objective):
    """A set whose lowest block is s trains on the recorded residual stream entering s: the same losses step by
    step as the full forward, and blocks below s are not run."""
    handle = tiny_handles[family]
    tok = handle.tokenizer
    yes, no = (tok(w, add_special_tokens=False)["input_ids"][0] for w in (" yes", " no"))
    examples = [(f"Is {w} edible? The answer is", a) for w, a in
                [("apple", " yes"), ("stone", " no"), ("bread", " yes"), ("iron oxide", " no"), ("rice", " yes")]]
    budget = LoraBudget(rank=2, steps=6, lr=2e-2, batch_size=2, objective=objective)
    losses, calls = {}, {}
    for replay in (False, True):
        steps = LoraSteps(handle, examples, budget, [yes, no], replay=replay)
        steps.entering(2)  # recorded before counting: the replayed run must not call block 0 while training
        count = []
        hook = handle.parts.mlp(0).register_forward_hook(lambda *_: count.append(1))  # block 0 computing
        try:
            with lora(handle, [2, 3], steps) as report:
                pass
        finally:
            hook.remove()
        losses[replay], calls[replay] = report.losses, len(count)
    assert calls == {False: 6, True: 0}
    np.testing.assert_allclose(losses[True], losses[False], rtol=1e-5, atol=1e-6)
    assert losses[True][-1] != losses[True][0]  # it trained
