"""What to log for a results folder: per-layer steps, summary values, tables, images and artifacts.

:func:`read_folder` turns a finished folder into a :class:`Payload` of plain data (no W&B objects), so
the whole mapping from medinterp's files to W&B keys lives here and is testable without W&B.

A folder is (:func:`medinterp.results.folder_kind`, the same rules as ``medinterp.report``)
- ``summary``: a sweep summary (``stability.*`` / ``robustness.*``) — or any folder of other results;
- ``map``: a synthesis ``<out>/<model>/`` folder (``knowledge_map.json``);
- ``validity``: a validity run (``validity.json``, runners/validate.py) — logged like a summary, and its lanes'
  scores go to the run summary and a ``tables/validity_lanes`` table;
- ``run``: a method run (``per_layer.csv`` + ``summary.json``).

A VQA folder (``runners/vqa.py``) is logged as a summary; its metrics.json scores also go to the run summary.

Keys (docs/tracking.md has the full list):

==============================================  ==========================================================
``<method>/<labeling>/<metric>``                a per-layer curve (x-axis ``layer``); ``.../ci_low``,
                                                ``.../ci_high`` its 95 % interval. In the run summary: the
                                                value at the best layer, ``best_layer/<key>`` that layer
``<method>/<labeling>/<metric>`` (summary)      a layer −1 baseline (``<key>/baseline`` if the metric also
                                                has per-layer values)
``knowledge_map/<domain>/<method>[/raw]``       a map's smoothed [raw] curve per layer
``tables/<name>``                               per_layer, best_layers, knowledge_map, findings, and any
                                                other CSV/JSON by its relative name without suffix
``figures/<name>``                              every PNG, by its relative name without suffix
``vqa/<answer_type>/<metric>`` (summary)        a VQA score (closed/accuracy, open/recall), ``.../ci_low``,
                                                ``.../ci_high``, ``.../n``
``sae/<metric>`` (summary)                      an SAE folder's fvu, explained_variance, l0, dead_fraction,
                                                ce_loss_recovered, kl, ce_clean/sae/zero, scale
``validity/<lane>[/<variant>]/<metric>``        a validity run's lane (variant: a steering ``alpha=<a>``): score,
(summary)                                       score/ci_low, score/ci_high, beats, effect, effect/ci_low,
                                                effect/ci_high, random_mean, random_sd, n_draws, n_broken,
                                                damage/<probe>; ``probe/<name>/accuracy``: the intact model's
==============================================  ==========================================================
"""
from __future__ import annotations

import hashlib
import json
import math
import re
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from importlib.resources import files
from pathlib import Path
from typing import Any

from medinterp.results import best_layers, folder_kind, read_run
from medinterp.secrets import contains_secret, has_secret_key, redact, secret_values
from medinterp.tracking.tables import (
    Table,
    best_layers_table,
    csv_table,
    flatten_json,
    knowledge_map_table,
    map_curves,
    per_layer_table,
)

RECORD_NAME = "wandb_logged.json"  # our local copy of what was logged, written into the folder
PROMPTS_PACKAGE = "medinterp.data.prompts"
STEP_METRIC = "layer"
SKIP_SUFFIXES = (".log", ".tmp")   # logs and atomic writers' temporary files are not results
MAX_TABLE_ROWS = 10_000            # wandb.Table.MAX_ROWS: W&B cuts a logged table there anyway
_ARTIFACT_NAME = re.compile(r"[^A-Za-z0-9_.-]+")


@dataclass
class ArtifactSpec:
    """One artifact to log: its files (name inside the artifact -> local path) and metadata."""

    name: str
    type: str
    files: dict[str, Path]
    metadata: dict[str, Any] = field(default_factory=dict)
    aliases: list[str] = field(default_factory=list)
    description: str = ""


@dataclass
class Payload:
    """Everything one results folder contributes to a tracked run."""

    kind: str                                                       # run | map | summary | atlas | validity
    steps: list[dict[str, float]] = field(default_factory=list)     # one per layer, each with "layer"
    step_globs: list[str] = field(default_factory=list)             # define_metric(glob, step_metric="layer")
    summary: dict[str, Any] = field(default_factory=dict)
    tables: dict[str, Table] = field(default_factory=dict)        # "tables/<name>" -> table
    images: dict[str, Path] = field(default_factory=dict)           # "figures/<name>" -> PNG
    artifacts: list[ArtifactSpec] = field(default_factory=list)
    provenance: dict[str, Any] = field(default_factory=dict)        # added to the run config
    config: dict[str, Any] | None = None                            # the folder's own resolved config, if any
    skipped: list[str] = field(default_factory=list)                # "file: why"

    @property
    def metric_keys(self) -> list[str]:
        return sorted({k for s in self.steps for k in s if k != STEP_METRIC})


def artifact_name(text: str) -> str:
    """A valid W&B artifact name (letters, digits, ``_ . -``)."""
    return _ARTIFACT_NAME.sub("-", text).strip("-.") or "results"


def metric_key(method: str, labeling: str, metric: str) -> str:
    return f"{method}/{labeling}/{metric}"


def _finite(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _secret_in_file(path: Path, secrets: list[str]) -> str | None:
    """Why ``path`` must not be logged, or None: it holds a secret environment value, or (JSON) a
    secret-looking key with a value, e.g. a literal ``api_key`` in a saved config."""
    data = path.read_bytes()
    if secrets and contains_secret(data, secrets):
        return "contains the value of a secret environment variable"
    if path.suffix.lower() == ".json":
        try:
            if has_secret_key(json.loads(data)):
                return "holds a secret-looking key (api_key, token, password, ...) with a value"
        except ValueError:
            pass  # not JSON after all: _generic reports it
    return None


def _result_files(folder: Path, recursive: bool, secrets: list[str], skipped: list[str]) -> dict[str, Path]:
    """The folder's result files by relative name (``a/b.csv``): top-level only unless ``recursive``;
    never hidden, temporary or log files, W&B's own folders (``wandb*``), our record, or a file that
    holds a secret."""
    out = {}
    for p in sorted(folder.rglob("*") if recursive else folder.iterdir()):
        rel = p.relative_to(folder)
        if (not p.is_file() or any(part.startswith((".", "wandb")) for part in rel.parts[:-1])
                or p.name.startswith(".") or p.name == RECORD_NAME or p.name.endswith(SKIP_SUFFIXES)):
            continue
        why = _secret_in_file(p, secrets)
        if why:
            skipped.append(f"{rel.as_posix()}: {why}")
            continue
        out[rel.as_posix()] = p
    return out


def _generic(payload: Payload, paths: dict[str, Path], special: set[str]) -> None:
    """Tables for CSV/JSON files and images for PNGs, keyed by their relative name without the suffix
    (``tables/stability``, ``figures/default_map/gemma3_270m/knowledge_map``); ``special`` names are
    left to the folder kind's own rules."""
    for rel, p in paths.items():
        if rel in special:
            continue
        key, suffix = rel[: -len(p.suffix)] if p.suffix else rel, p.suffix.lower()
        try:
            if suffix == ".csv":
                payload.tables[f"tables/{key}"] = csv_table(p)[0]
            elif suffix == ".json":
                data = json.loads(p.read_text(encoding="utf-8"))
                is_map = p.name == "knowledge_map.json" and isinstance(data, Mapping)
                payload.tables[f"tables/{key}"] = knowledge_map_table(data) if is_map else flatten_json(data)
            elif suffix == ".png":
                payload.images[f"figures/{key}"] = p
        except (ValueError, OSError, UnicodeDecodeError) as err:
            payload.skipped.append(f"{rel}: unreadable ({type(err).__name__})")


def _vqa_summary(payload: Payload, paths: dict[str, Path]) -> None:
    """A VQA folder's scores (top-level metrics.json with ``scores`` rows, medinterp/vqa/results.py) in the run
    summary: ``vqa/<answer_type>/<metric>`` with ``/ci_low``, ``/ci_high``, ``/n``; NaN values left out."""
    path = paths.get("metrics.json")
    try:
        rows = json.loads(path.read_text(encoding="utf-8")).get("scores") if path else None
    except (ValueError, OSError, UnicodeDecodeError, AttributeError):
        return  # _generic says it was unreadable
    for row in rows if isinstance(rows, list) else []:
        if isinstance(row, Mapping) and {"answer_type", "metric"} <= set(row):
            key = f"vqa/{row['answer_type']}/{row['metric']}"
            for suffix, name in (("", "value"), ("/ci_low", "ci_low"), ("/ci_high", "ci_high"), ("/n", "n")):
                if _finite(row.get(name)):
                    payload.summary[key + suffix] = row[name]


SAE_SUMMARY = ("fvu", "explained_variance", "l0", "dead_fraction", "ce_loss_recovered", "kl", "ce_clean", "ce_sae",
               "ce_zero", "scale")


def _sae_summary(payload: Payload, paths: dict[str, Path]) -> None:
    """An SAE folder's metrics (top-level metrics.json with ``ce_loss_recovered``, runners/sae.py) in the run
    summary: ``sae/<metric>``; NaN values left out."""
    path = paths.get("metrics.json")
    try:
        data = json.loads(path.read_text(encoding="utf-8")) if path else None
    except (ValueError, OSError, UnicodeDecodeError):
        return  # _generic says it was unreadable
    if isinstance(data, Mapping) and "ce_loss_recovered" in data:
        payload.summary.update({f"sae/{k}": data[k] for k in SAE_SUMMARY if _finite(data.get(k))})


VALIDITY_COLUMNS = ["lane", "variant", "blocks", "effect", "effect_ci_low", "effect_ci_high", "random_mean",
                    "random_sd", "validity", "validity_ci_low", "validity_ci_high", "beats", "n_draws", "n_broken",
                    "first_n", "last_n", "complement", "note"]


def _validity_summary(payload: Payload, paths: dict[str, Path]) -> None:
    """A validity run's lanes (validity.json, medinterp/validity/validate.py) in the run summary, under
    ``validity/<lane>[/<variant>]/...`` (module docstring; NaN left out: a broken lane has no score), the intact
    probes' accuracies under ``probe/<name>/accuracy``, and one row per lane in ``tables/validity_lanes``."""
    path = paths.get("validity.json")
    try:
        data = json.loads(path.read_text(encoding="utf-8")) if path else None
    except (ValueError, OSError, UnicodeDecodeError):
        return  # _generic says it was unreadable
    if not isinstance(data, Mapping) or not isinstance(data.get("lanes"), list):
        return
    payload.provenance.update({k: data[k] for k in ("model", "domain", "intervention") if isinstance(data.get(k), str)})
    for name, probe in (data.get("probes") or {}).items():
        if _finite(probe.get("accuracy")):
            payload.summary[f"probe/{name}/accuracy"] = probe["accuracy"]
    rows = []
    for lane in data["lanes"]:
        key = f"validity/{lane['lane']}" + (f"/{lane['variant']}" if lane.get("variant") else "")
        eff, v, base = lane.get("effect") or {}, lane.get("validity") or {}, lane.get("baselines") or {}
        values = {"score": v.get("score"), "score/ci_low": v.get("ci_low"), "score/ci_high": v.get("ci_high"),
                  "beats": v.get("beats"), "effect": eff.get("value"), "effect/ci_low": eff.get("ci_low"),
                  "effect/ci_high": eff.get("ci_high"), "random_mean": v.get("random_mean"),
                  "random_sd": v.get("random_sd"), "n_draws": v.get("n_draws"), "n_broken": v.get("n_broken"),
                  **{f"damage/{p}": d for p, d in (lane.get("damage") or {}).items()}}
        payload.summary.update({f"{key}/{k}": x for k, x in values.items() if _finite(x)})
        numbers = (eff.get("value"), eff.get("ci_low"), eff.get("ci_high"), v.get("random_mean"), v.get("random_sd"),
                   v.get("score"), v.get("ci_low"), v.get("ci_high"), v.get("beats"), v.get("n_draws"),
                   v.get("n_broken"), *((base.get(b) or {}).get("effect") for b in ("first_n", "last_n", "complement")))
        rows.append([lane["lane"], lane.get("variant", ""), json.dumps(lane.get("blocks", [])),
                     *(x if _finite(x) else None for x in numbers), lane.get("note", "")])
    payload.tables["tables/validity_lanes"] = Table(list(VALIDITY_COLUMNS), rows)


# --------------------------------------------------------------------------- run folders


def _run_steps(rows) -> tuple[list[dict[str, float]], list[str]]:
    """One step per layer ≥ 0 with every metric's value and CI at that layer (NaN left out)."""
    by_layer: dict[int, dict[str, float]] = defaultdict(dict)
    for r in rows:
        if r.layer < 0:
            continue
        key = metric_key(r.method, r.labeling, r.metric)
        for suffix, v in (("", r.value), ("/ci_low", r.ci_low), ("/ci_high", r.ci_high)):
            if _finite(v):
                by_layer[r.layer][key + suffix] = float(v)
    steps = [{STEP_METRIC: layer, **by_layer[layer]} for layer in sorted(by_layer)]
    globs = sorted({f"{r.method}/*" for r in rows if r.layer >= 0})
    return steps, globs


def _run_summary(rows, summary: Mapping[str, Any], curve_keys: set[str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for r in rows:  # layer-independent baselines
        if r.layer >= 0:
            continue
        key = metric_key(r.method, r.labeling, r.metric)
        key = f"{key}/baseline" if key in curve_keys else key
        for suffix, v in (("", r.value), ("/ci_low", r.ci_low), ("/ci_high", r.ci_high)):
            if _finite(v):
                out[key + suffix] = float(v)
    best = summary.get("best_layers")
    for b in best if isinstance(best, list) else best_layers(rows):
        key = metric_key(b["method"], b["labeling"], b["metric"])
        out[f"best_layer/{key}"] = int(b["layer"])
        for suffix, name in (("", "value"), ("/ci_low", "ci_low"), ("/ci_high", "ci_high")):
            if _finite(b.get(name)):
                out[key + suffix] = float(b[name])
            elif key + suffix in curve_keys:  # no CI at the best layer: do not leave the last layer's in place
                out[key + suffix] = None
    for k, v in (summary.get("timings") or {}).items():
        if _finite(v):
            out[f"timings/{k}"] = float(v)
    for k in ("n_points", "n_rows"):
        if _finite(summary.get(k)):
            out[k] = summary[k]
    return out


def prompt_set_artifact(prompt_set: Mapping[str, Any], domain: str | None, skipped: list[str]) -> ArtifactSpec | None:
    """The prompt-set YAML a run used, as artifact ``prompts-<domain>`` (alias ``v<version>``) — only if
    the file's sha256 still equals the one recorded in summary.json."""
    source, version, sha = prompt_set.get("source"), prompt_set.get("version"), prompt_set.get("sha256")
    if not source:
        return None
    prefix = f"{PROMPTS_PACKAGE}/"
    path = Path(str(files(PROMPTS_PACKAGE).joinpath(source[len(prefix):]))) if source.startswith(prefix) else Path(source)
    if not path.is_file():
        skipped.append(f"prompt set {source}: file not found")
        return None
    if sha and hashlib.sha256(path.read_bytes()).hexdigest() != sha:
        skipped.append(f"prompt set {source}: changed since the run (sha256 differs)")
        return None
    domain = domain or prompt_set.get("key", "prompts").split("-v")[0]
    return ArtifactSpec(name=artifact_name(f"prompts-{domain}"), type="prompt-set", files={path.name: path},
                        metadata={"domain": domain, "version": version, "sha256": sha, "key": prompt_set.get("key"),
                                  "source": source},
                        aliases=[f"v{version}"] if version else [],
                        description=f"medinterp prompt set {domain} v{version}")


def _read_run(folder: Path, payload: Payload, paths: dict[str, Path]) -> None:
    run = read_run(folder)
    rows, summary = run.rows, run.summary
    payload.steps, payload.step_globs = _run_steps(rows)
    payload.summary = _run_summary(rows, summary, set(payload.metric_keys))  # metric_keys include the CI keys
    if rows:
        payload.tables["tables/per_layer"] = per_layer_table(rows)
    payload.tables["tables/best_layers"] = best_layers_table(summary.get("best_layers") or best_layers(rows))
    payload.config = run.config
    model = summary.get("model") if isinstance(summary.get("model"), Mapping) else {}
    payload.provenance = {k: v for k, v in {
        "model": {k: model.get(k) for k in ("name", "key", "family", "n_layers", "d_model", "device") if k in model},
        "domain": summary.get("domain"), "method": summary.get("method"),
        "prompt_set": summary.get("prompt_set"), "templates": summary.get("templates"),
        "reduction": summary.get("reduction"), "n_points": summary.get("n_points"),
        "versions": summary.get("versions"), "run_id": summary.get("run_id"), "seed": summary.get("seed"),
        "config_hash": summary.get("config_hash")}.items() if v not in (None, {}, [])}
    if isinstance(summary.get("prompt_set"), Mapping):
        spec = prompt_set_artifact(summary["prompt_set"], summary.get("domain"), payload.skipped)
        if spec:
            payload.artifacts.append(spec)
    _generic(payload, paths, {"per_layer.csv", "summary.json", "config.json"})


# --------------------------------------------------------------------------- synthesis folders


def _read_map(folder: Path, payload: Payload, paths: dict[str, Path]) -> None:
    names = set(paths)
    kmap = json.loads((folder / "knowledge_map.json").read_text(encoding="utf-8")) if "knowledge_map.json" in names else {}
    if kmap:
        curves = map_curves(kmap)
        n = max((len(c) for c in curves.values()), default=0)
        payload.steps = [{STEP_METRIC: layer, **{k: c[layer] for k, c in curves.items()
                                                 if layer < len(c) and c[layer] is not None}} for layer in range(n)]
        payload.step_globs = ["knowledge_map/*"] if curves else []
        payload.tables["tables/knowledge_map"] = knowledge_map_table(kmap)
        for domain, entry in sorted(kmap.get("domains", {}).items()):
            agreed = entry.get("consensus") or []
            payload.summary[f"knowledge_map/{domain}/consensus"] = ", ".join(
                f"{a}" if a == b else f"{a}-{b}" for a, b in agreed) or "none"
        payload.provenance = {k: kmap[k] for k in ("model", "n_layers", "params", "missing") if k in kmap}
    if "findings.json" in names:
        found = json.loads((folder / "findings.json").read_text(encoding="utf-8"))
        payload.tables["tables/findings"] = flatten_json(found)
        for name, finding in found.items():
            if isinstance(finding, Mapping) and "available" in finding:
                payload.summary[f"findings/{name}/available"] = bool(finding["available"])
        if "params" in found:
            payload.provenance["findings_params"] = found["params"]
    _generic(payload, paths, {"knowledge_map.json", "findings.json"})


# --------------------------------------------------------------------------- entry point


def read_folder(folder: str | Path, results_name: str, extra_files: Iterable[str | Path] = ()) -> Payload:
    """Read a finished results folder into a :class:`Payload`; ``results_name`` names its results artifact.

    Run and map folders contribute their top-level files; a summary folder everything below it (e.g.
    ``default_map/<model>/``). ``extra_files`` (e.g. a multirun's ``multirun.yaml``) are treated like
    the folder's own top-level files: tables for CSV/JSON, images for PNG, part of the results artifact.
    """
    folder = Path(folder)
    secrets = secret_values()
    kind = folder_kind(folder) or "summary"  # anything else is logged as a summary
    payload = Payload(kind=kind)
    paths = _result_files(folder, kind == "summary", secrets, payload.skipped)
    for extra in map(Path, extra_files):
        why = _secret_in_file(extra, secrets) if extra.is_file() else "not a file"
        if why:
            payload.skipped.append(f"{extra}: {why}")
        else:
            paths.setdefault(extra.name, extra)
    if kind == "run":
        _read_run(folder, payload, paths)
    elif kind == "map":
        _read_map(folder, payload, paths)
    else:
        _generic(payload, paths, set())
        _vqa_summary(payload, paths)
        _sae_summary(payload, paths)
        _validity_summary(payload, paths)
    payload.provenance = redact({"kind": kind, "folder": str(folder.resolve()), **payload.provenance}, secrets)
    if paths:
        payload.artifacts.append(ArtifactSpec(
            name=artifact_name(f"results-{results_name}"), type="results", files=paths,
            metadata={"kind": kind, **{k: payload.provenance[k] for k in ("model", "domain", "method")
                                       if k in payload.provenance}},
            description=f"medinterp {kind} folder {folder.name}"))
    for key, table in payload.tables.items():
        if len(table.rows) > MAX_TABLE_ROWS:
            payload.skipped.append(f"{key}: rows after the first {MAX_TABLE_ROWS} of {len(table.rows)} (the whole "
                                   "file is in the results artifact)")
            table.rows = table.rows[:MAX_TABLE_ROWS]
        table.rows = redact(table.rows, secrets)  # no secret value in any cell
    return payload
