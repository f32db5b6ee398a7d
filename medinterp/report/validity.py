"""``report.html`` of a validity run (runners/validate.py, docs/validity.md): per lane the map's blocks, the
effect with its CI, the random draws' mean and sd, the validity z-score with its CI and the fraction of draws
beaten, the baselines, the off-domain damage and the broken sets; the probes' intact accuracies; validity.png."""
from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from medinterp.report import html as h
from medinterp.report.common import REPORT_NAME, footer, header, load_json, when, write_page

LANES_NOTE = ("effect: the probe's accuracy drop (ablation, mean) or gain (steer, lora) at the lane's blocks, "
              "95 % CI over items; random: mean ± sd of the effect at depth-matched random block sets; "
              "validity z = (effect − random mean) / random sd, 95 % CI over the draws; beats: fraction of "
              "draws the lane's effect exceeds (ties count half); baselines: the effect at the first N, the last N and "
              "the other blocks; off-domain damage: the effect on the other probes at the lane's blocks; broken: "
              "items / draws whose intervention gave non-finite logits (their effect is NaN, left out, never "
              "averaged in). Blocks are decoder blocks (block b writes read-out b + 1). Near 0: no better than random "
              "layers.")


def _blocks(blocks: list[int]) -> str:
    return h.layer_ranges(blocks) if blocks else "—"


def _lane_name(e: Mapping[str, Any]) -> str:
    return h.text(e["lane"] + (f" ({e['variant']})" if e.get("variant") else ""))


def lanes_section(result: Mapping[str, Any]) -> str:
    """One row per lane (and steering alpha)."""
    rows = []
    for e in result["lanes"]:
        name = _lane_name(e) + (f'<br><span class="note">{h.text(e["note"])}</span>' if e.get("note") else "")
        if not e.get("blocks"):
            rows.append([name, "—", "—", "—", "—", "—", "—", "—", "—"])
            continue
        eff, v = e["effect"], e["validity"]
        baselines = "<br>".join(f"{h.text(k)} ({_blocks(b['blocks'])}) {h.num(b['effect'], 3)}"
                                for k, b in e["baselines"].items())
        damage = "<br>".join(f"{h.text(k)} {h.num(d, 3)}" for k, d in e["damage"].items()) or "—"
        broken = f"{eff['broken']} of {eff['n']} items<br>{v['n_broken']} of {len(e['random'])} draws"
        rows.append([name, _blocks(e["blocks"]), f"{h.num(eff['value'], 3)} {h.ci(eff['ci_low'], eff['ci_high'])}",
                     f"{h.num(v['random_mean'], 3)} ± {h.num(v['random_sd'], 3)} (n={v['n_draws']})",
                     f"<b>{h.num(v['score'], 3)}</b> {h.ci(v['ci_low'], v['ci_high'])}", h.num(v["beats"], 3),
                     baselines, damage, broken])
    return h.table(["lane", "blocks", "effect [95 % CI]", "random mean ± sd", "validity z [95 % CI]", "beats",
                    "baselines", "off-domain damage", "broken"], rows, note=h.text(LANES_NOTE), cls="num")


def draws_section(result: Mapping[str, Any]) -> str:
    """Every random draw of every lane: its blocks, its effect on the domain's probe, its broken items."""
    rows = [[_lane_name(e), str(i), _blocks(r["blocks"]), h.num(r["effect"], 3), str(r["broken"])]
            for e in result["lanes"] for i, r in enumerate(e.get("random", []))]
    return h.table(["lane", "draw", "blocks", "effect", "broken items"], rows, cls="num", tall=True)


def probes_section(result: Mapping[str, Any]) -> str:
    """The intact model's accuracy on each probe, with chance and the majority label's share."""
    rows = [[h.text(name), f"{h.num(p['accuracy'], 3)} {h.ci(p['ci_low'], p['ci_high'])}", str(p["n"]),
             h.num(p["chance"], 3), h.num(p["majority"], 3), str(p["n_train"])] for name, p in result["probes"].items()]
    return h.table(["probe", "intact accuracy [95 % CI]", "test items", "chance", "majority", "train items"], rows,
                   cls="num")


def validity_page(folder: Path) -> str:
    """The page of a validity run folder (validity.json, validity.png, config.json)."""
    result = load_json(folder / "validity.json")
    facts = {"folder": folder.name, "written": when(folder / "validity.json"), "model": result["model"],
             "layers": result["n_layers"], "domain": result["domain"], "intervention": result["intervention"]}
    png = folder / "validity.png"
    sections = [h.Section("lanes", "Validity per lane", lanes_section(result)),
                h.Section("figure", "Map layers vs random layers",
                          h.figure(png) if png.is_file() else '<p class="note">no validity.png</p>'),
                h.Section("probes", "Behavioural probes (intact model)", probes_section(result))]
    extra = h.details("Random draws per lane", draws_section(result))
    extra += h.details("Settings", h.json_view(h.redact(result["settings"])))
    if result.get("lora_training"):
        extra += h.details("LoRA training per block set", h.json_view(result["lora_training"]))
    if (folder / "config.json").is_file():
        extra += h.details("Run config", h.json_view(h.redact(load_json(folder / "config.json"))))
    sections.append(h.Section("setup", "Settings", extra))
    title = f"Validity · {result['model']} · {result['domain']} · {result['intervention']}"
    return h.page(f"medinterp · {title}", header(title, facts), sections, footer())


def write_validity_report(folder: str | Path) -> Path:
    """Write ``<folder>/report.html`` (atomically) and return its path."""
    folder = Path(folder)
    return write_page(folder / REPORT_NAME, validity_page(folder))
