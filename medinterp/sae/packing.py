"""Pack documents into fixed-length contexts, as SAELens and dictionary_learning feed an SAE's language model.

Each document is tokenized without special tokens and followed by the end-of-sequence token (the separator);
the documents' tokens run on as one stream, cut into contexts of ``ctx_len`` tokens. When the tokenizer has a
BOS token, every context starts with it and holds ``ctx_len - 1`` stream tokens (the model always sees a
well-formed start; SAELens's ``prepend_bos``). A document may straddle two contexts. Documents are taken
from the front of the corpus until ``n_contexts`` contexts are full; when the corpus runs out first, the last
context is padded (``mask`` 0 there) and fewer contexts may come back.

The SAE reads every non-pad token EXCEPT position 0 (:func:`token_mask`): position 0 (the BOS or first token)
is an attention sink whose norm is tens of times the others' and would dominate the reconstruction loss.

``Packed.sha256`` hashes the documents that went in (source and text, in order): with the tokenizer it fixes
the run's training data; per-source document and token counts go into the run's corpus.json.
"""
from __future__ import annotations

import hashlib
from collections import Counter
from dataclasses import dataclass, field

import torch

from medinterp.capture.tokens import position_ids
from medinterp.errors import MedinterpError
from medinterp.sae.corpus import Document

CHUNK = 512  # documents tokenized per call


@dataclass
class Packed:
    """Contexts (n, ctx_len) of token ids and their pad mask (1 = real token), with what went in."""

    input_ids: torch.Tensor  # (n, T) int64
    mask: torch.Tensor  # (n, T) int64, 1 = real token
    sha256: str
    documents: int
    tokens_per_source: dict[str, int] = field(default_factory=dict)
    documents_per_source: dict[str, int] = field(default_factory=dict)

    @property
    def n_tokens(self) -> int:
        """Non-pad tokens of all contexts."""
        return int(self.mask.sum())

    def summary(self) -> dict:
        return {"contexts": int(self.input_ids.shape[0]), "ctx_len": int(self.input_ids.shape[1]),
                "tokens": self.n_tokens, "sae_tokens": int(token_mask(self.mask).sum()),
                "documents": self.documents, "sha256": self.sha256, "tokens_per_source": self.tokens_per_source,
                "documents_per_source": self.documents_per_source}


def token_mask(mask: torch.Tensor) -> torch.Tensor:
    """(n, T) bool: the tokens an SAE reads — real (non-pad) tokens except each row's first real token
    (position 0, wherever padding puts it)."""
    return mask.bool() & (position_ids(mask) >= 1)


def pack(tokenizer, documents: list[Document], ctx_len: int, n_contexts: int) -> Packed:
    """The first ``n_contexts`` contexts of ``ctx_len`` tokens packed from ``documents`` (see the module doc)."""
    bos, sep = tokenizer.bos_token_id, tokenizer.eos_token_id
    if sep is None:
        sep = bos
    if ctx_len < 2 or (bos is not None and ctx_len < 3):
        raise MedinterpError(f"sae.ctx_len must be at least 3 (a BOS, a token and the next one); got {ctx_len}")
    body = ctx_len - (bos is not None)
    need = body * n_contexts
    stream: list[int] = []
    origin: list[str] = []  # the source of each stream token
    digest = hashlib.sha256()
    used = 0
    while len(stream) < need and used < len(documents):
        chunk = documents[used:used + CHUNK]
        ids = tokenizer([d.text for d in chunk], add_special_tokens=False)["input_ids"]
        for doc, toks in zip(chunk, ids):
            if len(stream) >= need:
                break
            toks = list(toks) + ([sep] if sep is not None else [])
            stream += toks
            origin += [doc.source] * len(toks)
            digest.update(f"{doc.source}\t{doc.text}\n".encode())
            used += 1
    if not stream:
        raise MedinterpError("sae.corpus: the documents hold no tokens to train on")
    stream, origin = stream[:need], origin[:need]
    n = min(n_contexts, -(-len(stream) // body))
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else sep
    ids = torch.full((n, ctx_len), pad, dtype=torch.long)
    mask = torch.zeros((n, ctx_len), dtype=torch.long)
    start = 1 if bos is not None else 0
    for i in range(n):
        part = stream[i * body:(i + 1) * body]
        if bos is not None:
            ids[i, 0], mask[i, 0] = bos, 1
        ids[i, start:start + len(part)] = torch.tensor(part)
        mask[i, start:start + len(part)] = 1
    docs = Counter()
    tokens = Counter(origin)
    for doc in documents[:used]:
        docs[doc.source] += 1
    return Packed(ids, mask, digest.hexdigest(), used, dict(tokens), dict(docs))


__all__ = ["Packed", "pack", "token_mask"]
