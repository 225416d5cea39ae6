"""One HTML site of everything a results store holds (``flexbench report``): an index and one page per experiment
(its newest record, bench.experiments.record), Flexiffusion search, rFID ablation and the conformance table, plus a
page of measured rows no experiment names.  Every page is rendered from the store only, through the renderers the
commands use (reports.experiment, reports.conformance, bench.search.ablation's plot); the paired differences of a
Pareto table are computed from the rows' cached image features (reports.experiment.paired_against).  The index
counts the store's results by kind and says which pages show them, so a result no page shows is visible too.

A metric no renderer names (a new one of the registry) shows up by its registry header and format: tables of rows,
searches and ablations list every metric their results hold.
"""
from __future__ import annotations

import json
import re
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from flexiffusion.errors import UserError

from bench.results import METRICS, fmt, header

from . import figures, html
from .cells import REFERENCE, with_spread
from .experiment import rfid_reference

TITLE = "flexiffusion-bench: every result in the store"
INDEX = "index.html"


@dataclass
class Page:
    file: str
    report: html.Report
    summary: str                                 # one line on the index
    keys: set = field(default_factory=set)       # the store results it shows
    kind: str = "experiments"                    # the index's heading it is listed under


@dataclass
class Site:
    pages: list
    empty: bool
    counts: dict          # key kind -> (results, shown on a page)


def slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", str(text).lower()).strip("-") or "page"


def _metric_order(names) -> list[str]:
    """Metrics in registry order, then the rest (a metric the registry does not know) by name; no spread columns."""
    names = {n for n in names if not n.endswith(("_low", "_high", "_sd"))}
    known = [m for m in METRICS if m in names]
    return known + sorted(names - set(known))


def _footnotes(markdown: str) -> list[str]:
    return [ln.rstrip() for ln in markdown.splitlines()
            if ln.strip() and not ln.startswith("|") and not ln.startswith("#")]


# ---- experiments ---------------------------------------------------------------------------------------------------
def experiment_page(record, store, work: Path, reference=None, cache_dir=None) -> Page:
    """One experiment as its command rendered it (reports.experiment.render over the record's cells), with its
    paired differences, plots, schedule strips and, where the writer sampled them, the sample grid."""
    from . import figures_samples
    from .experiment import render

    spec, model = record.spec, record.model
    out = work / f"{spec.name}-{slug(model)}"
    done = render(spec, model, record.cells, record.comparisons, store, out, reference, cache_dir)
    folder = done.folder
    prov = [{k: v for k, v in p.items() if k in ("label", "status", "keys", "command", "note")}
            for p in done.provenance]
    notes = [n for n in _footnotes(done.markdown) if "provenance.json" not in n and n not in done.paired_lines]
    table = html.Table.from_dataframe("results", done.table.rename_axis("row"), prov, note=notes)
    sections: list = [table]
    pngs = {f["file"]: f["title"] for f in done.files if f["file"].endswith(".png")}
    missing = [n for n in done.paired_lines if n.startswith("No paired difference")]
    if done.paired:
        d = done.paired
        sections.append(html.Table(
            f"paired FID differences against {d['reference']}",
            ["row", f"ΔFID vs {d['reference']}", "95% paired interval", "verdict"],
            [[x["label"], f"{x['value']:+.2f}", f"[{x['low']:+.2f}, {x['high']:+.2f}]",
              "significant" if x["significant"] else "not significant"] for x in d["differences"]],
            note=f"FID(row) - FID({d['reference']}) over the same seeds, B = {d['differences'][0]['b']} paired "
                 "resamples of the images (the same resampled indices for both rows): most of the noise the "
                 "unpaired intervals carry cancels, so a difference can be significant while the unpaired "
                 "intervals overlap. " + " ".join(missing)))
    elif missing:
        sections.append(html.Text("paired FID differences", missing))
    for y in ("fid", "rfid"):
        name = f"pareto_{y}.png"
        if name not in pngs:
            continue
        unpaired = html.Figure(pngs.pop(name), folder / name,
                               f"unpaired: each row's {header(y)} with its own bootstrap interval")
        if y == "fid" and done.paired:
            forest = html.Figure(pngs.pop(done.paired["file"]), folder / done.paired["file"],
                                 f"paired: ΔFID against {done.paired['reference']}, same seeds")
            sections.append(html.Figures(f"{header(y)} against avg MACs: unpaired values and paired differences",
                                         [unpaired, forest]))
        else:
            sections.append(unpaired)
    if record.samples is not None:
        grid = figures_samples.sample_grid(record.samples.images, folder / "samples.png", seeds=record.samples.seeds)
        sections.append(html.Figure("samples (each row's images from the same seeds)", grid,
                                    "one row per method, column j = the image of the same seed for every row"))
    sections += [html.Figure(title, folder / name) for name, title in pngs.items()]
    keys = {k for c in record.cells for k in c.keys} | {c.key for c in record.comparisons if c.key} | {record.key}
    measured = sum(c.status in ("measured", "reused") for c in record.cells)
    report = html.Report(f"{spec.title} ({model})", sections,
                         intro=f"{spec.paper}. Model `{model}`; {len(record.cells)} rows ({measured} measured); "
                               f"experiment record `{record.key}` ({record.created}); every number from the results "
                               "store, provenance per row under the table.")
    return Page(f"experiment-{slug(spec.name)}-{slug(model)}.html", report,
                f"{spec.title} on {model}: {len(record.cells)} rows, {measured} measured", keys)


# ---- searches ------------------------------------------------------------------------------------------------------
def _values(rows) -> dict:
    out: dict = {}
    for r in rows:
        out.setdefault(r["metric"], r["value"])
    return out


def _plan(row) -> list | None:
    plan = row.get("plan")
    plan = json.loads(plan) if isinstance(plan, str) else plan
    return (plan or {}).get("steps")


def search_pages(store, work: Path) -> list[Page]:
    """One page per stored Flexiffusion search (``flexiffusion-search/<key>``, the newest of each name): its best
    candidate and cost (Table 5's figures), every evaluation of its evaluation setting (avg MACs against fitness,
    the Pareto set and the best marked), the best and Pareto plans as strips."""
    from bench.search.driver import EVAL_PREFIX, SEARCH_PREFIX

    newest: dict = {}
    for key in store.keys(SEARCH_PREFIX + "/"):
        rows = store.get(key)
        name = (rows[0]["extra"] or {}).get("search", key)
        if name not in newest or rows[0]["created"] >= newest[name][1][0]["created"]:
            newest[name] = (key, rows)
    pages = []
    for name, (key, rows) in sorted(newest.items()):
        values, extra = _values(rows), rows[0]["extra"] or {}
        meta = json.loads(store.get_meta(f"search/{name}") or "{}").get("setting", {})
        evaluation = meta.get("evaluation")
        cost_keys = [k for k in store.keys("search-cost/") if k.endswith("/" + key.split("/")[-1])]
        cost = _values(store.get(cost_keys[-1])) if cost_keys else {}
        shown = {**values, **cost}
        columns = _metric_order(shown)
        table = html.Table("search", ["search", *[header(m) for m in columns]],
                           [[name, *[fmt(m, shown[m]) for m in columns]]],
                           [{"search result": key, "cost result": cost_keys[-1] if cost_keys else "(none)",
                             "model": rows[0]["model"], "n_images": rows[0]["n_images"]}],
                           note=f"preset `{meta.get('preset', '?')}`, budget {meta.get('budget', 0) / 1e9:.4g} G avg "
                                f"MACs, fitness {meta.get('evaluation_setting', {}).get('fitness', '?')} on "
                                f"{rows[0]['n_images']} images")
        sections: list = [table]
        keys = {key, *cost_keys[-1:]}
        evals = []
        if evaluation:
            for k in store.keys(f"{EVAL_PREFIX}/{evaluation}/"):
                r = store.get(k)
                v = _values(r)
                if v.get("fitness") is not None and v.get("avg_macs") is not None:
                    evals.append({"digest": k.split("/")[-1], "x": v["avg_macs"] / 1e9, "y": v["fitness"],
                                  "plan": _plan(r[0])})
                    keys.add(k)
        pareto = set(extra.get("pareto") or [])
        best = rows[0]["plan_digest"]
        fitness = meta.get("evaluation_setting", {}).get("fitness", "rfid")
        folder = work / f"search-{slug(name)}"
        folder.mkdir(parents=True, exist_ok=True)
        if evals:
            for e in evals:
                e.update(pareto=e["digest"] in pareto, best=e["digest"] == best)
            p = figures.evaluations(evals, folder / "evaluations.png", meta.get("budget", 0) / 1e9 or None,
                                    figures.axis_label("avg_macs_paper_g"),
                                    figures.axis_label(fitness) + f" (search fitness, {rows[0]['n_images']} images)",
                                    f"search {name}: every evaluation of its setting")
            sections.append(html.Figure("evaluations", p, f"{len(evals)} evaluations stored under this search's "
                                        "evaluation setting (searches of the same setting share them); the Pareto "
                                        "set joined, the best starred, the budget dashed"))
        plans = {("best " if e["best"] else "Pareto ") + e["digest"]: e["plan"] for e in
                 sorted(evals, key=lambda e: (not e["best"], e["x"])) if (e["best"] or e["pareto"]) and e["plan"]}
        if not plans and _plan(rows[0]):
            plans = {f"best {best}": _plan(rows[0])}
        if plans:
            grid = len(next(iter(plans.values())))
            p = figures.schedule_strips(plans, folder / "plans.png", f"search {name}: best and Pareto plans",
                                        order_label=f"step of the search's {grid}-step grid (the teacher's "
                                                    "timesteps, noisiest first)")
            sections.append(html.Figure("best and Pareto plans", p))
        report = html.Report(f"Flexiffusion search {name}", sections,
                             intro=f"Search result `{key}`; evaluation setting `{evaluation}`.")
        pages.append(Page(f"search-{slug(name)}.html", report,
                          f"search {name}: best {header(fitness)} {fmt(fitness, values.get('best_fitness'))} at "
                          f"{fmt('best_avg_macs', (values.get('best_avg_macs') or 0) / 1e9)} G avg MACs, "
                          f"{fmt('evaluated', values.get('evaluated'))} evaluations", keys, "searches"))
    return pages


# ---- ablations -----------------------------------------------------------------------------------------------------
def ablation_pages(store, work: Path) -> list[Page]:
    """One page per rFID image-count ablation (``ablation-summary/...``): Kendall's tau against the FID reference
    per metric and image count k (Tables 4 and 9's cells) and the tau-vs-k plot of ``flexbench ablation``."""
    from bench.search import ablation

    pages = []
    for i, key in enumerate(store.keys(ablation.SUMMARY_PREFIX + "/"), start=1):
        rows = store.get(key)
        groups: dict = {}
        for r in rows:
            groups.setdefault((r["method"], r["n_images"]), {"label": (r["extra"] or {}).get("label"), "rows": []})
            groups[(r["method"], r["n_images"])]["rows"].append(r)
        metrics = _metric_order({r["metric"] for r in rows})
        table_rows = [[g["label"] or f"{m}-{k}", *[fmt(x, _values(g["rows"]).get(x)) or "n/a" for x in metrics]]
                      for (m, k), g in groups.items()]
        extra = rows[0]["extra"] or {}
        config = extra.get("config", {})
        n_ref = extra.get("reference_images")
        table = html.Table("Kendall's tau against the reference ranking", ["metric-k", *[header(m) for m in metrics]],
                           table_rows, [{"key": key, "model": rows[0]["model"], "device": rows[0]["device"]}] *
                           len(table_rows),
                           note=f"{config.get('candidates', '?')} random candidates of preset "
                                f"`{config.get('preset', '?')}`; reference: FID against the real data at {n_ref} "
                                "generated images; n/a: a constant ranking has no tau")
        folder = work / f"ablation-{i}"
        folder.mkdir(parents=True, exist_ok=True)
        summary = {"table": [{"metric": m, "k": k, **{c: _values(g["rows"]).get(metric)
                                                      for c, metric in ablation.SUMMARY_METRICS.items()}}
                             for (m, k), g in groups.items()],
                   "reference_noise": extra.get("reference_noise", {}), "reference_images": n_ref}
        sections: list = [table]
        if summary["reference_noise"].get("kendall_tau") is not None:
            ablation.plot(summary, folder / "tau_vs_k.png")
            sections.append(html.Figure("Kendall's tau against images per candidate", folder / "tau_vs_k.png",
                                        "one line per fitness metric; dashed: the reference's own noise (tau "
                                        "between its two halves)"))
        prefix = "ablation/" + "/".join(key.split("/")[1:-1]) + "/"
        keys = {key, *store.keys(prefix)}
        name = f"{config.get('preset', '?')}, {config.get('candidates', '?')} candidates, k = " \
               f"{', '.join(str(k) for k in config.get('ks', []))}"
        pages.append(Page(f"ablation-{i}.html", html.Report(f"rFID image-count ablation: {name}", sections,
                                                            intro=f"Ablation summary `{key}`."),
                          f"ablation {name}", keys, "ablations"))
    return pages


# ---- conformance and rows no experiment names ---------------------------------------------------------------------
def conformance_page(store) -> list[Page]:
    from bench.experiments.conformance import EXPERIMENT

    from . import conformance

    keys = store.keys(EXPERIMENT + "/")
    if not keys:
        return []
    key = max(keys, key=lambda k: store.get(k)[0]["created"])
    report = conformance.page(store, key)
    return [Page("conformance.html", report, "the paper's printed cost cells beside ours, its claims with the "
                 "store's evidence", {key}, "conformance")]


def rows_page(store, named: set) -> list[Page]:
    """Measured rows (``row/...``) no experiment record names (e.g. ``flexbench run``): one table, every metric
    they hold by its registry header."""
    keys = [k for k in store.keys("row/") if k not in named]
    if not keys:
        return []
    results = {k: store.get(k) for k in keys}
    metrics = _metric_order({r["metric"] for rows in results.values() for r in rows})
    body, prov = [], []
    for k, rows in results.items():
        values = _values(rows)   # the spread metrics (fid_sd, ...) with them
        reference = rfid_reference(rows)
        body.append([rows[0]["method"], rows[0]["model"],
                     *[REFERENCE if m == "rfid" and reference else with_spread(m, values) for m in metrics]])
        prov.append({"key": k, "n_images": rows[0]["n_images"], "device": rows[0]["device"]})
    table = html.Table("measured rows", ["row", "model", *[header(m) for m in metrics]], body, prov)
    return [Page("rows.html", html.Report("Measured rows no experiment names", [table],
                                          intro="Rows of `flexbench run` (or of an experiment whose record is not "
                                                "stored), each with every metric it holds."),
                 f"{len(keys)} measured rows no experiment names", set(keys), "other rows")]


# ---- the site ------------------------------------------------------------------------------------------------------
def check_reference(records, reference: str | None) -> None:
    if reference is None:
        return
    labels = sorted({c.label for r in records for c in r.cells if c.status in ("measured", "reused")})
    if reference not in labels:
        raise UserError(f"--reference {reference!r}: no experiment in the store has a measured row of that label "
                        f"(measured rows: {', '.join(labels) or 'none'})")


def build(store, work, reference: str | None = None, cache_dir=None) -> Site:
    """Every page of the site (figures rendered under ``work``)."""
    from bench.experiments.record import latest_records

    work = Path(work)
    all_keys = store.keys()
    records = latest_records(store)
    check_reference(records, reference)
    pages = [experiment_page(r, store, work, reference, cache_dir) for r in records]
    named = set().union(*(p.keys for p in pages)) if pages else set()
    pages += search_pages(store, work) + ablation_pages(store, work) + conformance_page(store)
    pages += rows_page(store, named)
    shown = set().union(*(p.keys for p in pages)) if pages else set()
    counts: dict = {}
    for k in all_keys:
        kind = k.split("/", 1)[0]
        n, s = counts.get(kind, (0, 0))
        counts[kind] = (n + 1, s + (k in shown))
    return Site(pages, not all_keys, counts)


NOT_SHOWN = {"experiment": "earlier records of an experiment (its newest is shown)",
             "row": "rows of an earlier record of an experiment",
             "compare": "paired comparisons of an earlier record of an experiment",
             "cost": "architecture cost cells of an earlier record of an experiment",
             "latency": "latency results of rows no page shows",
             "flexiffusion-eval": "search evaluations under a setting no stored search result names (interrupted)",
             "autodiffusion-eval": "AutoDiffusion's search evaluations (its best candidate is its row's plan)",
             "autodiffusion-search": "AutoDiffusion's own searches (their best candidate is the row's plan)"}
KINDS = ("experiments", "searches", "ablations", "conformance", "other rows")


def index(site: Site, store_path) -> html.Report:
    if site.empty:
        return html.Report(TITLE, [html.Text("nothing to show", [
            f"The results store `{store_path}` holds no results.",
            "Fill it first, e.g. `flexbench demo --store FILE`, `flexbench experiment table2 --store FILE`, "
            "`flexbench search --preset embedded-50 --store FILE` or `flexbench ablation --store FILE`, then run "
            "`flexbench report --store FILE --out DIR` again."])])
    sections: list = [html.Text(kind, links=[(p.file, p.summary) for p in site.pages if p.kind == kind])
                      for kind in KINDS if any(p.kind == kind for p in site.pages)]
    sections.append(html.Table("what the store holds", ["result kind", "results", "shown on a page", "not shown"],
                               [[k, n, s, "" if s == n else NOT_SHOWN.get(k, "no page names them")]
                                for k, (n, s) in sorted(site.counts.items())]))
    total = sum(n for n, _ in site.counts.values())
    return html.Report(TITLE, sections,
                       intro=f"Results store `{store_path}`: {total} results, {len(site.pages)} pages. Every table "
                             "and figure is rendered from the store (paired differences from the rows' cached image "
                             "features).")


@dataclass
class Written:
    index: Path
    pages: int
    empty: bool


def write(store, store_path, out_dir, reference: str | None = None, cache_dir=None) -> Written:
    """Render the site of ``store`` into ``out_dir`` atomically (the previous site kept until the new one is whole)."""
    with tempfile.TemporaryDirectory() as work:
        site = build(store, work, reference, cache_dir)
        nav = [(INDEX, "index")]
        pages = {INDEX: index(site, store_path)}
        for p in site.pages:
            p.report.nav = nav
            pages[p.file] = p.report
        path = html.write_site(pages, out_dir)
    return Written(path, len(site.pages), site.empty)


def write_experiment(store, key: str, out_dir, reference: str | None = None, cache_dir=None) -> Path:
    """One experiment record's page alone as ``out_dir/index.html`` (what ``flexbench demo --report`` writes: the
    same page as in the whole site)."""
    from bench.experiments.record import read_record

    with tempfile.TemporaryDirectory() as work:
        page = experiment_page(read_record(store, key), store, Path(work), reference, cache_dir)
        return html.write_site({INDEX: page.report}, out_dir)
