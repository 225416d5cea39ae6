"""Render a stored conformance result (``conformance/<hash>``, bench/experiments/conformance.py) from the store only:
``OUT/conformance/`` gets ``conformance.md`` (summary, every cost cell, the claims), ``costs.md`` / ``claims.md``
(one table each, for the HTML gatherer), ``costs.csv`` / ``claims.csv`` (raw values, verdicts, store keys),
``conformance.html`` (a small self-contained page: the same tables, each row's store keys as its provenance) and
``manifest.json``."""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from bench.experiments.conformance import PAPER_CONVENTION, PUBLISHED_FILE, TOLERANCE, read


KINDS = ("match", "differs", "budget only", "not comparable")
CSV_COLUMNS = ("id", "table", "group", "row", "line", "column", "model", "quantity", "printed", "paper", "ours",
               "ours_text", "diff_abs", "diff_pct", "kind", "verdict", "rule", "within", "tolerance", "convention",
               "paper_convention", "source", "note", "keys", "published")
TITLE = "Conformance: the paper's printed numbers against ours"


def _cell_text(value) -> str:
    return str(value).replace("|", "\\|").replace("\n", " ")


def to_markdown(df: pd.DataFrame, title: str = "", footnotes=()) -> str:
    """A GitHub pipe table without padding (the cost table has 241 rows and long notes), the index first."""
    head = [df.index.name or ""] + [str(c) for c in df.columns]
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
    for i, row in zip(df.index, df.itertuples(index=False)):
        lines.append("| " + " | ".join(_cell_text(v) for v in (i, *row)) + " |")
    notes = "".join(f"{line}  \n" for line in footnotes)
    return (f"## {title}\n\n" if title else "") + "\n".join(lines) + "\n" + (f"\n{notes}" if notes else "")


def _num(v, signed: bool = False) -> str:
    if v is None or (isinstance(v, float) and v != v):
        return ""
    text = f"{v:+.4g}" if signed else f"{v:.4g}"
    return text


def _verdict(c: dict, reasons: dict | None = None) -> str:
    """The verdict as shown: a match with its rule; a "not comparable: why" as ``not comparable [n]`` when
    ``reasons`` collects the whys as footnotes (one per distinct reason)."""
    rule = c.get("rule") or ""
    if c["kind"] == "match" and rule:
        return f"{c['verdict']} ({rule})"
    if c["kind"] == "not comparable" and reasons is not None:
        why = c["verdict"].split(": ", 1)[-1]
        n = reasons.setdefault(why, len(reasons) + 1)
        return f"not comparable [{n}]"
    return c["verdict"]


def cost_frame(comparisons: list[dict], reasons: dict | None = None) -> pd.DataFrame:
    """One display row per published cell (``reasons``: see :func:`_verdict`)."""
    rows = []
    for c in comparisons:
        rows.append({"table": c["table"], "group": c["group"], "row": c["row_id"], "column": c["column"],
                     "model": c["model"], "paper": c["printed"], "ours": c["ours_text"],
                     "Δ": _num(c.get("diff_abs"), True),
                     "Δ %": "" if c.get("diff_pct") is None else f"{c['diff_pct']:+.2f}",
                     "verdict": _verdict(c, reasons), "convention": c["convention"], "note": c["note"]})
    df = pd.DataFrame(rows)
    df.index = pd.RangeIndex(1, len(df) + 1, name="#")
    return df


def summary_frame(comparisons: list[dict]) -> pd.DataFrame:
    """Cells per table and verdict kind (and a total)."""
    table: dict = {}
    for c in comparisons:
        line = table.setdefault(c["table"], {"cells": 0, **{k: 0 for k in KINDS}})
        line["cells"] += 1
        line[c["kind"]] += 1
    total = {"cells": len(comparisons), **{k: sum(v[k] for v in table.values()) for k in KINDS}}
    df = pd.DataFrame.from_dict({**table, "all": total}, orient="index")
    df.index.name = "table"
    return df


def differing(comparisons: list[dict]) -> list[str]:
    return [f"{c['table']} | {c['group'] + ' | ' if c['group'] else ''}{c['row_id']} | {c['column']} ({c['model']}): "
            f"paper {c['printed']}, ours {c['ours_text']} ({c['diff_pct']:+.2f} %)"
            + (f" -- {c['note']}" if c["note"] else "")
            for c in comparisons if c["kind"] == "differs"]


def outside_budget(comparisons: list[dict]) -> list[str]:
    return [f"{c['table']} | {c['group'] + ' | ' if c['group'] else ''}{c['row_id']} | {c['column']}: paper "
            f"{c['printed']}: {c['verdict'][len('budget only: '):]}"
            for c in comparisons if c["kind"] == "budget only" and c.get("within") is False]


def claims_frame(claims: list[dict], sep: str = "<br>") -> pd.DataFrame:
    rows = [{"claim": c["text"], "paper": c["paper"], "model": c["model"] or "-", "verdict": c["verdict"],
             "evidence": sep.join(c["evidence"]) if c["evidence"] else "-"} for c in claims]
    df = pd.DataFrame(rows)
    df.index = pd.RangeIndex(1, len(df) + 1, name="#")
    return df


@dataclass
class Rendered:
    folder: Path
    markdown: str             # conformance.md
    cost_markdown: str        # costs.md (the cost cells)
    claims_markdown: str      # claims.md
    files: list


def _report(key, summary, costs, claims, comparisons, claim_rows, notes):
    from .html import Report, Table

    def prov(keys):
        return {"store keys": ", ".join(keys) if keys else "(none)"}

    return Report(TITLE, intro=" ".join(notes), sections=[
        Table.from_dataframe("Summary", summary.reset_index()),
        Table.from_dataframe("Cost cells", costs.reset_index(), [prov(c["keys"]) for c in comparisons],
                             note=f"conformance result {key}"),
        Table.from_dataframe("Claims", claims.reset_index(), [prov(c["keys"]) for c in claim_rows]),
    ])


def _html(key, summary, costs, claims, comparisons, claim_rows, notes) -> str:
    from .html import render_html

    return render_html(_report(key, summary, costs, claims, comparisons, claim_rows, notes), {})


def _notes(key, comparisons) -> list[str]:
    return [f"Result {key} of the results store; published values: {PUBLISHED_FILE.name} "
            f"({len(comparisons)} printed cost cells).",
            f"Our MACs: {PAPER_CONVENTION}; real architectures with random weights (bench.presets).",
            f"Verdicts: NFE exact; other numbers match within {100 * TOLERANCE:g} % of the paper's value or at its "
            "printed precision; 'budget only': a searched row, compared with its search preset's budget and space; "
            "'not comparable: why'."]


def page(store, key: str):
    """The stored conformance result ``key`` as one page of the HTML report (reports.html.Report), the same tables
    as conformance.html."""
    comparisons, claims = read(store, key)
    return _report(key, summary_frame(comparisons), cost_frame(comparisons), claims_frame(claims, "; "), comparisons,
                   claims, _notes(key, comparisons))


def render(store, key: str, out_dir) -> Rendered:
    """Write OUT/conformance/... from the stored result ``key``."""
    from flexiffusion.io import atomic_write_text

    comparisons, claims = read(store, key)
    out = Path(out_dir) / "conformance"
    out.mkdir(parents=True, exist_ok=True)
    costs, summary = cost_frame(comparisons), summary_frame(comparisons)
    notes = _notes(key, comparisons)
    diff = differing(comparisons)
    over = outside_budget(comparisons)
    reasons: dict = {}
    cost_md = to_markdown(cost_frame(comparisons, reasons), "Cost cells",
                          notes + [f"[{n}] not comparable: {why}" for why, n in reasons.items()])
    claims_md = to_markdown(claims_frame(claims), "Claims",
                            ["Verdict rules: " + "; ".join(f"{c['claim']}: {c['rule']}"
                                                            for c in {c['claim']: c for c in claims}.values())])
    parts = [f"# {TITLE}\n", "\n".join(f"{n}  " for n in notes) + "\n", to_markdown(summary, "Summary")]
    if diff:
        parts.append("Differing cells:\n\n" + "\n".join(f"* {d}" for d in diff) + "\n")
    if over:
        parts.append("Searched rows outside their preset's budget or space:\n\n" + "\n".join(f"* {d}" for d in over)
                     + "\n")
    parts += [cost_md, claims_md]
    markdown = "\n".join(parts)
    files = []
    for name, text, title in (("conformance.md", markdown, TITLE), ("costs.md", cost_md, "cost cells"),
                              ("claims.md", claims_md, "claims")):
        atomic_write_text(out / name, text)
        files.append({"file": name, "title": title})
    raw = pd.DataFrame([{k: (json.dumps(c.get(k)) if isinstance(c.get(k), (list, dict)) else c.get(k))
                         for k in CSV_COLUMNS} for c in comparisons], columns=list(CSV_COLUMNS))
    atomic_write_text(out / "costs.csv", raw.to_csv(index=False))
    raw_claims = pd.DataFrame([{**c, "evidence": "\n".join(c["evidence"]), "keys": " ".join(c["keys"])}
                               for c in claims])
    atomic_write_text(out / "claims.csv", raw_claims.to_csv(index=False))
    atomic_write_text(out / "conformance.html", _html(key, summary, costs, claims_frame(claims, "; "), comparisons,
                                                      claims, notes))
    files += [{"file": "costs.csv", "title": "cost cells (raw)"}, {"file": "claims.csv", "title": "claims (raw)"},
              {"file": "conformance.html", "title": "conformance page"}]
    atomic_write_text(out / "manifest.json", json.dumps(
        {"experiment": "conformance", "title": TITLE, "key": key, "files": files,
         "items": [f for f in files if f["file"] in ("costs.md", "claims.md")]}, indent=1))
    return Rendered(out, markdown, cost_md, claims_md, files)
