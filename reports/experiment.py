"""Render one experiment from the results store only: ``OUT/NAME/`` gets table.md / .tex / .csv, provenance.json
(per row: model, weights, images, seeds, device, threads, git commit, time, store keys), its plots (PNG) and
manifest.json (files with titles) for the HTML gatherer.  Cells without a value say why ("needs weights [n]",
"search [n]", "not yet filled: flexbench ablation [n]"): footnote n names the command that fills them.  A table
filled by another command (``filled_by``) has one row per group of that command's rows (bench.experiments.runner);
a cell of a filled row whose metric that command did not store says "not stored [n]", one stored without a value
(e.g. a p-value of a constant ranking) "n/a".  Comparisons are rendered with their paired
bootstrap interval and "significant" / "not significant"; a Pareto table also gets every row's paired FID
difference against a reference row (:func:`paired_against`: the teacher unless named) as a forest plot beside the
unpaired Pareto plot.  rFID's own teacher shows its rFID as the reference, not as a value with an interval; an
interval of a metric with a floor (FID) is clipped there, with a footnote saying why."""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from bench.results import METRICS

from . import figures
from .cells import CLIP_NOTE, CLIPPED, COST_METRICS, REFERENCE, header, interval, with_spread
from .tables import to_markdown, write_tables

PROVENANCE = ("model", "weights", "n_images", "seeds", "device", "threads", "git_commit", "created", "scheduler")


def _values(store, keys, where=None) -> tuple[dict, list[dict]]:
    """A cell's figures from its keys' rows (only those matching ``where``: column -> value); a later key overrides
    an earlier one (a measured row, last, overrides the architecture's cost cell: MACs counted on the model as it
    ran, e.g. with ToMe applied)."""
    values, rows = {}, []
    for key in keys:
        got = [r for r in store.get(key) or [] if all(r.get(c) == v for c, v in (where or {}).items())]
        rows += got
        mine: dict = {}
        for r in got:
            mine.setdefault(r["metric"], r["value"])
        values.update(mine)
    return values, rows


def _provenance(cell, rows) -> dict:
    out = {"label": cell.label, "status": cell.status, "keys": cell.keys, "command": cell.command,
           "note": cell.note, **({"where": cell.where} if cell.where else {}), "sources": []}
    seen = set()
    for r in rows:
        if r["key"] in seen:
            continue
        seen.add(r["key"])
        src = {c: r.get(c) for c in PROVENANCE}
        src["key"] = r["key"]
        src["bootstrap"] = (r.get("extra") or {}).get("bootstrap")
        out["sources"].append(src)
    return out


def rfid_reference(rows) -> bool:
    """Whether a cell's stored rows are rFID's own teacher (bench.rows.is_teacher read off the measured row: the
    registry's ``teacher``, no ToMe, all full DDIM steps on the teacher's grid): its images are rFID's reference
    images, so its rFID is 0 by definition, not a measurement with a spread."""
    for r in rows:
        extra = r.get("extra") or {}
        if r.get("metric") != "rfid" or "setting" not in extra:
            continue
        plan = json.loads(r["plan"]) if isinstance(r.get("plan"), str) else (r.get("plan") or {})
        steps = plan.get("steps", [])
        return (extra.get("method") == "teacher" and not (extra.get("config") or {}).get("tome")
                and r.get("scheduler") == "ddim" and len(steps) == extra["setting"].get("teacher_steps")
                and all(t == "f" for t in steps))
    return False


def collect(spec, cells, store):
    """(display DataFrame, raw DataFrame, provenance list, footnotes, records for plots)."""
    display, raw, prov, notes, records, ids = {}, {}, [], [], [], {}
    for n, cell in enumerate(cells, start=1):
        values, rows = _values(store, cell.keys, cell.where) if store is not None else ({}, [])
        for m in spec.columns:   # a field (model, device, threads): the store row's own column, the last key's
            if m in METRICS and METRICS[m].field and rows:
                values[m] = rows[-1].get(m)
        prov.append({"id": f"p{n}", **_provenance(cell, rows)})
        writer = cell.command.split()[1] if cell.command.startswith("flexbench ") else ""
        why = {"cost only": "needs weights", "search": "search", "elsewhere": f"not yet filled: flexbench {writer}",
               "planned": "planned", "needs weights": "needs weights"}.get(cell.status)
        if cell.where and cell.status in ("reused", "measured"):   # a group of another command's rows
            why = "not stored"
        i = ids.get(cell.command)
        if cell.command and i is None:
            i = ids[cell.command] = len(ids) + 1
            notes.append(f"[{i}] fills it: `{cell.command}`")
        line = {}
        reference = rfid_reference(rows)
        for m in spec.columns:
            text = REFERENCE if m == "rfid" and reference and values.get(m) is not None else with_spread(m, values)
            if not text and cell.where and m in values:
                text = "n/a"
            elif not text and why and not (m in COST_METRICS and cell.status == "cost only"):
                text = f"{why} [{i}]"
            line[header(m)] = text
        line["src"] = f"p{n}"
        display[cell.label] = line
        raw[cell.label] = {**values, "status": cell.status}
        spread = {"rfid_reference": reference}
        for m in ("fid", "rfid"):   # the plotted interval is the table's (clipped at the floor), none for the reference
            lo, hi = interval(m, values) if not (m == "rfid" and reference) else (None, None)
            spread.update({f"{m}_low": lo, f"{m}_high": hi})
        records.append({"label": cell.label, "plan": cell.plan, "rows": rows, "cell": cell, **values, **spread})
    df = pd.DataFrame.from_dict(display, orient="index")
    return df, pd.DataFrame.from_dict(raw, orient="index"), prov, notes, records


def _comparison_lines(comparisons, store) -> list[str]:
    lines = []
    for c in comparisons:
        if not c.key:
            lines.append(f"{c.a} vs {c.b}: not compared ({c.reason})")
            continue
        v = {r["metric"]: r["value"] for r in store.get(c.key)}
        extra = store.get(c.key)[0]["extra"]
        verdict = "significant" if extra["significant"] else "not significant"
        lines.append(f"{c.a} vs {c.b}: ΔFID = {v['fid_diff']:+.2f}, {100 * extra['level']:.0f}% paired bootstrap "
                     f"interval [{v['fid_diff_low']:+.2f}, {v['fid_diff_high']:+.2f}] (B = {extra['b_resamples']}, "
                     f"over images, same seeds): **{verdict}**")
    return lines


def reference_label(cells, store, named: str | None = None) -> str | None:
    """The row the paired differences are taken against: ``named`` when given (a label of ``cells``), else rFID's
    own teacher, else the first measured row; None without a measured row."""
    measured = [c for c in cells if c.status in ("measured", "reused") and c.keys]
    if named is not None:
        return named if any(c.label == named for c in measured) else None
    for c in measured:
        if rfid_reference(store.get(c.keys[-1]) or []):
            return c.label
    return measured[0].label if measured else None


def paired_against(reference: str, cells, store, cache_dir=None) -> tuple[list[dict], list[str]]:
    """``(differences, missing)``: per measured row other than ``reference``, FID(row) - FID(reference) with its
    paired bootstrap interval over the same seeds (bench.experiments.compare.paired_difference, B as the reference
    row's own bootstrap; computed from the cached image features, not stored), and the rows without cached features."""
    from bench.experiments.compare import paired_difference

    by_label = {c.label: c for c in cells if c.status in ("measured", "reused") and c.keys}
    ref = by_label[reference]
    ref_rows = store.get(ref.keys[-1]) or []
    b = next(((r.get("extra") or {}).get("bootstrap", {}).get("b") for r in ref_rows), None) or 200
    out, missing = [], []
    for label, c in by_label.items():
        if label == reference:
            continue
        d = paired_difference(c.keys[-1], ref.keys[-1], store, cache_dir, b)
        if d is None:
            missing.append(label)
            continue
        out.append({"label": label, "value": d.value, "low": d.low, "high": d.high, "sd": d.sd, "b": d.b,
                    "level": d.level, "significant": d.significant})
    return out, missing


def _forest(spec, cells, store, out: Path, reference, cache_dir) -> tuple[list[dict], list[str]]:
    label = reference_label(cells, store, reference)
    if label is None:
        return [], []
    diffs, missing = paired_against(label, cells, store, cache_dir)
    lines = [f"{d['label']} - {label}: ΔFID = {d['value']:+.2f} [{d['low']:+.2f}, {d['high']:+.2f}] "
             f"({100 * d['level']:.0f}% paired bootstrap, B = {d['b']}, same seeds): "
             f"**{'significant' if d['significant'] else 'not significant'}**" for d in diffs]
    if missing:
        lines.append(f"No paired difference for {', '.join(missing)}: their image features are not in the cache "
                     "(the cache the rows were measured with: --cache-dir / FLEXBENCH_CACHE)")
    if not diffs:
        return [], lines
    p = figures.forest(diffs, out / "paired_fid.png", label, "FID",
                       title=f"paired FID differences against {label}")
    return [{"file": p.name, "title": f"paired FID differences against {label} (forest plot)",
             "reference": label, "differences": diffs}], lines


def _plots(spec, records, out: Path) -> list[dict]:
    made = []
    if spec.plot == "pareto":
        for y in ("fid", "rfid"):
            if any(r.get(y) is not None for r in records):
                p = figures.pareto(records, out / f"pareto_{y}.png", y=y,
                                   title=f"{spec.name}: {header(y)} against avg MACs (unpaired intervals)")
                made.append({"file": p.name, "title": f"Pareto front, {header(y)} against avg MACs"})
    if spec.plot == "schedules" or spec.plot == "pareto":
        plans = {r["label"]: r["plan"] for r in records if r.get("plan")}
        if plans:
            steps_at = {r["label"]: r["cell"].timesteps for r in records if r.get("plan")}
            base = next((r["cell"].base_grid for r in records if r["cell"].base_grid), None)
            p = figures.schedule_strips(plans, out / "schedules.png", spec.title, steps_at, base)
            made.append({"file": p.name, "title": "schedules as step-type strips (each step at its timestep)"
                         if base is not None and all(steps_at.values()) else "schedules as step-type strips"})
    if spec.plot == "quality-vs-branch":
        for r in records:
            r["branch"] = next((x["extra"]["config"].get("branch") for x in r["rows"]
                                if isinstance((x.get("extra") or {}).get("config"), dict)), None)
        for y in ("fid", "rfid", "avg_macs_paper_g"):
            if any(r.get(y) is not None and r.get("branch") for r in records):
                p = figures.line(records, out / f"{y}_vs_branch.png", "branch", y, spec.title)
                made.append({"file": p.name, "title": f"{y} against skip branch"})
    if spec.plot == "branches":
        series = {}
        for r in records:
            for x in r["rows"]:
                if x["metric"] == "fraction_paper":
                    series.setdefault(x["model"], []).append((x["extra"]["branch"], x["value"]))
        if series:
            p = figures.curves(series, out / "macs_vs_branch.png", "branch", "MACs of partial(b) / full (paper)",
                               spec.title)
            made.append({"file": p.name, "title": "MACs of a partial step against its branch (Fig. B.1)"})
    if spec.plot == "similarity":
        mats = {x["method"]: x["extra"]["matrix"] for r in records for x in r["rows"] if x["metric"].startswith("steps")}
        if mats:
            p = figures.heatmaps(mats, out / "similarity.png", spec.title)
            made.append({"file": p.name, "title": "cosine similarity of cached features between steps"})
    return made


@dataclass
class Rendered:
    """What :func:`render` wrote, in memory too (callers print or embed it without reading the files back)."""

    folder: Path
    markdown: str                  # table.md
    table: pd.DataFrame            # the displayed cells
    raw: pd.DataFrame              # the numbers behind them
    provenance: list               # per row
    comparisons: list              # one line per compare pair
    files: list                    # [{"file", "title"}] as in manifest.json
    paired: dict | None = None     # the forest plot: {"file", "title", "reference", "differences"}
    paired_lines: list = None      # the paired differences against the reference, one line each


def render(spec, model: str, cells, comparisons, store, out_dir, reference: str | None = None,
           cache_dir=None) -> Rendered:
    """Write OUT/NAME/... (tables, provenance.json, plots, manifest.json); ``reference``: the row of the paired
    differences of a Pareto table (default rFID's teacher), ``cache_dir``: where the rows' image features are."""
    out = Path(out_dir) / spec.name
    out.mkdir(parents=True, exist_ok=True)
    df, raw, prov, notes, records = collect(spec, cells, store)
    if spec.layout == "branches":     # one row per model and convention, a column per branch
        df = _branch_table(records)
    if spec.layout == "per-method":   # one row per model and method (fig. 4: per branch)
        df = _per_method(records, spec.columns)
    comp = _comparison_lines(comparisons, store)
    foot = [f"Model: {model}. Provenance of each row (src) in provenance.json."]
    spread = [c for c in ("fid", "rfid", "psnr_db", "ssim", "lpips") if c in spec.columns]
    if spread:
        names = "/".join(header(c).split(" vs ")[0].split(" (")[0] for c in spread)
        foot.append(f"{names}: value [95% normal bootstrap interval over images: value -/+ 1.96 sd of B resamples].")
    if "rfid" in spec.columns and (df == REFERENCE).any().any():
        foot.append(f"rFID {REFERENCE}: that row is rFID's teacher; its images are the reference images.")
    if df.map(lambda v: CLIPPED in str(v)).any().any():
        foot.append(CLIP_NOTE)
    forest, paired = ([], [])
    if spec.plot == "pareto" and store is not None:
        forest, paired = _forest(spec, cells, store, out, reference, cache_dir)
    foot += notes + comp + paired
    paths = write_tables(df, out, spec.title, foot, raw)
    (out / "provenance.json").write_text(json.dumps({"experiment": spec.name, "model": model, "rows": prov,
                                                     "comparisons": comp}, indent=1, default=str))
    files = [{"file": p.name, "title": f"{spec.title} ({k})"} for k, p in paths.items()]
    files.append({"file": "provenance.json", "title": "provenance of every row"})
    files += _plots(spec, records, out) + [{"file": f["file"], "title": f["title"]} for f in forest]
    (out / "manifest.json").write_text(json.dumps({"experiment": spec.name, "title": spec.title, "model": model,
                                                   "paper": spec.paper, "files": files}, indent=1))
    return Rendered(out, to_markdown(df, spec.title, foot), df, raw, prov, comp, files,
                    forest[0] if forest else None, paired)


def _branch_table(records) -> pd.DataFrame:
    table: dict = {}
    for r in records:
        for x in r["rows"]:
            if x["metric"].startswith("fraction_"):
                table.setdefault(f"{x['model']} ({x['metric'][9:]})", {})[f"b{x['extra']['branch']}"] = f"{x['value']:.3f}"
    return pd.DataFrame.from_dict(table, orient="index").fillna("")


def _per_method(records, columns) -> pd.DataFrame:
    table = {f"{x['model']}, {x['method']}": {header(x["metric"]): with_spread(x["metric"], {x["metric"]: x["value"]})}
             for r in records for x in r["rows"] if x["metric"] in columns}
    return pd.DataFrame.from_dict(table, orient="index")
