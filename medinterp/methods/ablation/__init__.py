"""Layer ablation: remove one decoder block at a time and measure how much the answers change.

Procedure (methods.md 1.3; Marinescu et al., ICLR 2026, who judged with GPT-4o):

1. Pick up to ``max_prompts`` prompts, spread evenly over the domain's items (:func:`select_prompts`).
2. The intact model answers each prompt greedily (``max_new_tokens``, left padding, ``do_sample=False``).
3. For each block ``l``, :func:`medinterp.hooks.replace_by_identity` replaces the block by the identity (its output is its
   input; the block computes nothing), and with it in place:

   a. one teacher-forced forward of prompt + intact answer gives the lesioned next-token distributions
      along the intact answer (logits only at the answer positions, via ``logits_to_keep``), from which,
      per prompt, averaged over the answer's tokens (EOS included when the answer ends with one):

      - ``kl``    = mean_t KL(p_intact(·|x, a<t) ‖ p_lesioned(·|x, a<t)), nats, >= 0;
      - ``dlogp`` = mean_t [log p_intact(a_t|x, a<t) − log p_lesioned(a_t|x, a<t)], nats;

   b. only if the judge needs text (LLM judges): the lesioned model's own greedy answer.
4. The judge scores each (prompt, block) from 1 (no change) to 10 (gibberish).

Step 3a is where the time goes (one pass per block and batch), and exact shortcuts make it about five
times faster on Gemma-3-270M (:class:`LesionScorer`; tests check them against the plain computation to
1e-4 relative; docs/benchmarks.md):

- **prefix reuse**: below block ``l`` the lesioned run *is* the intact run, so the intact pass caches
  every block's output and blocks ``0..l-1`` replay them (:func:`medinterp.hooks.skip_with_outputs`);
  only blocks ``l+1..`` are computed;
- **no second vocabulary pass**: with a plain linear LM head (no logit soft-capping), KL and Δlog p
  follow from the lesioned run's log-sum-exp over the vocabulary and its final hidden state alone
  (the intact distribution's mean unembedding ``Σ_v p_v W_v`` is computed once per batch); see
  :class:`LesionScorer` for the formulas. Other heads use the model's own forward and :func:`token_metrics`;
- **one vocabulary pass per batch**: those log-sum-exps are taken for all the blocks of a batch together,
  in slices of the vocabulary (:func:`lse_rows`), and the intact logits once.

Rows (labeling ``all``; block ``l`` at read-out layer ``l + 1``, see methods/base.py): ``kl``, ``dlogp``
and ``judge_score`` (mean over prompts with a percentile-bootstrap 95 % CI); for LLM judges also
``judge_missing`` (failed items, no CI), ``judge_coverage`` and ``judge_agreement``, the Spearman
correlation across prompts between KL and the LLM score (no CI; NaN where either is constant).

Judge coverage. An LLM judge can fail (a server that answers 500 or garbage, a dead local server); its
failed items are missing, and identical answers are scored 1 without being sent. So that an outage never
reads as "no damage" (a mean over the unsent identical items only), a block's ``judge_coverage`` is the
fraction of the items *sent* to the judge that got a valid verdict (cached verdicts count as answered).
Below ``min_judge_coverage`` (default 0.8) the block's ``judge_score`` is NaN, without CI, with the note
``judge coverage 0.25 < 0.80``. A block none of whose items was sent (every lesioned answer identical to
the intact one) keeps ``judge_score`` 1 (true: the answers did not change), coverage 1, and a note saying
so. The summary carries the coverage per layer and ``degraded`` (true when any sent item went
unanswered), and the runner ends the log with one WARNING naming the coverage.

Generation under ablation keeps the KV cache correct instead of turning it off: transformers 5 passes
the cache to every block (as ``cache`` from 5.24 on, ``past_key_values`` before) and each attention
module appends its keys/values for its layer, so a skipped block would leave its layer's cache empty,
and the cache length (read from layer 0) and the masks would be wrong whenever block 0 is skipped. The
identity therefore appends zero keys/values of the right shape for its own layer (never read, since
the block stays skipped for the whole ``generate`` call), so every layer's cache keeps the same
length. Tests check that generation under ablation with the cache equals a no-cache greedy reference
on a copy of the model with the block deleted. ``use_cache=False`` gives the same tokens but costs
O(T²): ~17× slower for 16 tokens on CPU.

Modules: :mod:`~medinterp.methods.ablation.generate` (greedy answers, teacher-forced log-probs),
:mod:`~medinterp.methods.ablation.lesion` (the lesion scorer, sliced log-sum-exp),
:mod:`~medinterp.methods.ablation.judging` (judge coverage and agreement),
:mod:`~medinterp.methods.ablation.method` (:class:`LayerAblation`); the block replacement itself is
:func:`medinterp.hooks.replace_by_identity`.
"""
from medinterp.methods.ablation.generate import answer_hidden, answer_logprobs, decode_answers, greedy_generate
from medinterp.methods.ablation.judging import JudgeCoverage, spearman
from medinterp.methods.ablation.lesion import LesionScorer, lesion_head, lse_rows, token_metrics
from medinterp.methods.ablation.method import AblationWork, LayerAblation, select_prompts
from medinterp.models.padding import padding_side

__all__ = ["AblationWork", "JudgeCoverage", "LayerAblation", "LesionScorer", "answer_hidden", "answer_logprobs",
           "decode_answers", "greedy_generate", "lesion_head", "lse_rows", "padding_side", "select_prompts", "spearman",
           "token_metrics"]
