"""Conformance: the paper's printed cost numbers against ours, and the paper's claims against the store's evidence.

**Published values** (:func:`load_published`): ``bench/experiments/paper/published.toml`` transcribes every cost cell
the paper prints (NFE, MACs / avg MACs, speed-up by MACs, wall times, Table 5's budgets and GPU hours, and what
appendix C's text states about Fig. B.1), each with its table, row label, column, model, the printed text and its
value, and where our value comes from (``ours``).  Parsing is strict: an unknown field, a quantity outside
:data:`QUANTITIES`, a model outside bench/experiments/models.py or a value that is not the printed number is one
UserError line naming the row.

**Our value of each cell** (:func:`compare_costs`), always in the paper's MAC convention (:data:`PAPER_CONVENTION`):

* a row with a fixed plan (a spec row, ``{spec, row}``, or a registry method, ``{method, config, teacher_steps}``):
  NFE, avg MACs (total MACs / the teacher's steps), total MACs and speed-up from the plan on the model's real
  architecture with random weights, stored once as the experiments' cost rows
  (:func:`bench.experiments.costs.plan_cost_rows`: ``cost/<preset>/<hash>``, the key ``flexbench experiment`` uses
  for the same spec row); a speed-up divides the teacher's MACs, or the ``speedup_reference`` row's;
* a row the paper found by a search (``{search = PRESET}``): there is no plan to cost, so the comparison is against
  the preset (bench/search/presets.py, the paper's Table 8): the paper's avg / total MACs must lie within the
  preset's budget, its speed-up at or above the one the budget guarantees, its NFE inside the space's NFE range.
  Verdict ``budget only: ...``; where the store holds a search of that preset, "ours" is its best plan's value
  (costed like any plan), the verdict still the budget's;
* Table 5 (``{search_cost = PRESET}``): the resolution and budget against the preset's; the GPU hours are not
  comparable (the paper's RTX 3090 hours of a full-size search), shown next to a stored search's device hours;
* Fig. B.1 (``{branch = B}``): partial(B) / full on the architecture (:func:`bench.experiments.costs.branch_rows`,
  ``figB1/<preset>/<hash>``, the key of ``flexbench experiment figB1``);
* wall times (s/image, ms/image) and methods this suite does not implement: ``not comparable: <why>``.

Verdicts: NFE must be equal (``exact``); any other number ``match`` es when within :data:`TOLERANCE` (1 %) of the
paper's value, or when ours rounds to the printed value at its printed precision (a speed-up printed as 4.2x
cannot be held closer than its rounding); else ``differs``.  A speed-up whose printed value disagrees with the
paper's own MACs gets a note saying so.

**Claims** (:func:`check_claims`): six statements of the paper, each judged per model from results the experiments
already stored: paired bootstrap comparisons (``compare/...``, bench/experiments/compare.py) with the compared
rows (``row/...``), the rFID ablation's summary (``ablation-summary/...``), controlled latencies (``latency/...``).
Verdicts ``reproduced`` / ``not resolved at this n`` / ``contradicted`` with the rule used, or ``not measured yet:
<command that measures it>``.

**Stored**: :func:`run` keeps the whole comparison as one result ``conformance/<hash>`` (experiment
``conformance``; the hash covers the published file, the tolerance and every store key it read), one group of rows
per cell (metrics ``paper_value``, ``ours_value``, ``diff_abs``, ``diff_pct``; the rest under ``extra``) and one
row per claim (``claim_evidence``); ``reports/conformance.py`` renders it from the store only.
"""
from __future__ import annotations

import hashlib
import math
import re
import tomllib
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

from flexiffusion.errors import UserError

from .models import MODELS, get_model

PUBLISHED_FILE = Path(str(resources.files("bench.experiments") / "paper" / "published.toml"))
TOLERANCE = 0.01
VERSION = 1
EXPERIMENT = "conformance"
G = 1e9
PAPER_CONVENTION = ("paper convention: fvcore's default handles, batch 1, U-Net only, attention matmuls not counted, "
                    "no classifier-free-guidance doubling, no text encoder or decoder")
LATENCY_REASON = ("not comparable: wall time on the paper's NVIDIA RTX 3090 with the real weights; this suite times "
                  "a row on the machine that runs it (latency_s_per_image), not on that GPU")

# quantity -> (what, unit, convention of our value)
QUANTITIES = {
    "nfe": ("NFE", "evaluations", "count of U-Net evaluations"),
    "avg_macs_g": ("avg MACs", "G", "paper MACs / teacher steps"),
    "total_macs_g": ("MACs over the sampling", "G", "paper MACs, total"),
    "speedup": ("speed-up by MACs", "x", "ratio of paper MACs"),
    "s_per_image": ("wall time", "s/image", "wall time"),
    "ms_per_image": ("wall time", "ms/image", "wall time"),
    "budget_g": ("search budget", "G", "search preset"),
    "gpu_hours": ("search cost", "GPU hours", "device hours"),
    "resolution": ("image side", "px", "architecture"),
    "fraction": ("partial step / full step", "", "paper MACs ratio"),
}
LATENCY = ("s_per_image", "ms_per_image")
OURS_KINDS = ("spec", "method", "search", "search_cost", "branch", "none")
ROW_FIELDS = {"table", "row", "line", "group", "model", "ours", "speedup_reference", "note", "cells"}
CELL_FIELDS = {"column", "quantity", "printed", "value", "note"}

# ---- published values -----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PublishedCell:
    """One printed cost cell of the paper."""

    table: str
    row: str
    column: str
    model: str
    quantity: str
    printed: str
    value: float
    group: str = ""
    line: str = ""
    ours: dict = field(default_factory=dict)
    speedup_reference: str = ""
    note: str = ""

    @property
    def row_id(self) -> str:
        """The row as the data file names it: ``row`` or ``row [line]``."""
        return f"{self.row} [{self.line}]" if self.line else self.row

    @property
    def ident(self) -> str:
        return " | ".join(p for p in (self.table, self.group, self.row_id, self.column) if p)

    @property
    def ours_kind(self) -> str:
        return next(k for k in OURS_KINDS if k in self.ours)


NUMBER = re.compile(r"[-+]?\d+(?:\.(\d+))?")


def parse_printed(text: str) -> tuple[float, int, float]:
    """``(number, decimals, scale)`` of a printed cell: "3.01 G" -> (3.01, 2, 1), "about 80%" -> (0.8, 0, 100)."""
    m = NUMBER.search(text)
    if not m:
        raise ValueError(f"no number in {text!r}")
    scale = 100.0 if "%" in text else 1.0
    return float(m.group(0)) / scale, len(m.group(1) or ""), scale


def _published_error(path, where: str, msg: str) -> UserError:
    return UserError(f"{Path(path).name}: {where}: {msg}")


def load_published(path=None) -> list[PublishedCell]:
    """Every printed cost cell of the data file (default :data:`PUBLISHED_FILE`), checked strictly."""
    path = Path(path or PUBLISHED_FILE)
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise UserError(f"{path}: not a readable TOML file ({exc})") from None
    cells: list[PublishedCell] = []
    for i, row in enumerate(data.get("rows", [])):
        where = f"rows[{i}]"
        unknown = sorted(set(row) - ROW_FIELDS)
        if unknown:
            raise _published_error(path, where, f"no field {unknown[0]!r} (fields: {', '.join(sorted(ROW_FIELDS))})")
        for name in ("table", "row", "model", "ours", "cells"):
            if not row.get(name):
                raise _published_error(path, where, f"missing {name!r}")
        where = f"rows[{i}] ({row['table']} {row['row']})"
        if row["model"] not in MODELS:
            raise _published_error(path, where, f"model {row['model']!r} is not one of {', '.join(MODELS)}")
        ours = row["ours"]
        kinds = [k for k in OURS_KINDS if k in ours]
        if len(kinds) != 1 or set(ours) - {*OURS_KINDS, "row", "config", "teacher_steps"}:
            raise _published_error(path, where, f"ours = {ours!r}: give exactly one of {', '.join(OURS_KINDS)}")
        if kinds[0] == "spec" and not ours.get("row"):
            raise _published_error(path, where, "ours.spec needs ours.row (the spec row's label)")
        if kinds[0] == "method" and not ours.get("teacher_steps"):
            raise _published_error(path, where, "ours.method needs ours.teacher_steps (the avg MACs' denominator)")
        for j, cell in enumerate(row["cells"]):
            cw = f"{where} cells[{j}]"
            unknown = sorted(set(cell) - CELL_FIELDS)
            if unknown:
                raise _published_error(path, cw, f"no field {unknown[0]!r} (fields: {', '.join(sorted(CELL_FIELDS))})")
            for name in ("column", "quantity", "printed", "value"):
                if name not in cell or cell[name] in ("", None):
                    raise _published_error(path, cw, f"missing {name!r}")
            if cell["quantity"] not in QUANTITIES:
                raise _published_error(path, cw, f"quantity {cell['quantity']!r} is not one of "
                                                 f"{', '.join(QUANTITIES)}")
            try:
                number, _, _ = parse_printed(str(cell["printed"]))
            except ValueError as exc:
                raise _published_error(path, cw, str(exc)) from None
            if not math.isclose(number, float(cell["value"]), rel_tol=1e-9, abs_tol=1e-12):
                raise _published_error(path, cw, f"value {cell['value']} is not the printed {cell['printed']!r}")
            cells.append(PublishedCell(row["table"], row["row"], cell["column"], row["model"], cell["quantity"],
                                       str(cell["printed"]), float(cell["value"]), row.get("group", ""),
                                       row.get("line", ""), dict(ours), row.get("speedup_reference", ""),
                                       "; ".join(n for n in (row.get("note", ""), cell.get("note", "")) if n)))
    if not cells:
        raise UserError(f"{path}: no [[rows]] with cells")
    return cells


def published_digest(path=None) -> str:
    return hashlib.sha256(Path(path or PUBLISHED_FILE).read_bytes()).hexdigest()[:16]


# ---- our value of a row ---------------------------------------------------------------------------------------------


@dataclass
class Ours:
    """Our figures of one published row (a plan's cost, a search preset's bounds, ...)."""

    kind: str
    values: dict = field(default_factory=dict)    # quantity -> our value
    keys: list = field(default_factory=list)      # store keys read
    note: str = ""
    reason: str = ""                              # not comparable: why
    search: dict = field(default_factory=dict)    # search rows: budget_g, budget_total_g, nfe_range, min_speedup,
                                                  # teacher_g, stored (name), stored values


def _cost_values(store, key: str) -> dict:
    rows = store.get(key) or []
    v = {r["metric"]: r["value"] for r in rows}
    steps = (rows[0].get("extra") or {}).get("teacher_steps") if rows else None
    out = {"nfe": v.get("nfe"), "avg_macs_g": v.get("avg_macs_paper_g"), "speedup": v.get("speedup_paper")}
    if steps and v.get("avg_macs_paper_g") is not None:
        out["total_macs_g"] = v["avg_macs_paper_g"] * steps
        out["teacher_g"] = v["avg_macs_paper_g"] * v["speedup_paper"]   # one full step
    return out


def _plan_of(cell: PublishedCell):
    """``(plan, scheduler, label, teacher_steps)`` of a fixed-plan row."""
    from baselines.registry import Experiment

    ours = cell.ours
    if "spec" in ours:
        from .runner import prepared_rows
        from .spec import load

        spec = load(ours["spec"])
        for row, exp in prepared_rows(spec, cell.model):
            if row.label == ours["row"] and not row.search:
                plan, scheduler = exp.plan()
                return plan, scheduler, row.label, spec.teacher_steps
        raise UserError(f"published {cell.ident}: spec {ours['spec']} has no fixed-plan row {ours['row']!r} on "
                        f"{cell.model}")
    label = f"{cell.table} {cell.row_id}"
    exp = Experiment.from_dict({"method": ours["method"], "config": ours.get("config") or {}, "label": label})
    planned = exp.plan()
    if planned is None:
        raise UserError(f"published {cell.ident}: method {ours['method']} has no fixed plan")
    return planned[0], planned[1], label, int(ours["teacher_steps"])


def _resolution(cost_preset: str) -> int:
    """The image side of a model: its decoder's output for a latent model, else what the sampler denoises."""
    from bench.presets import get_preset

    arch = get_preset(cost_preset)
    decoders = [p for p in arch.parts if p.kind == "decoder" and "sample_size" in p.config]
    return int(decoders[0].config["sample_size"]) if decoders else int(arch.sample_shape[-1])


def _stored_search_cost(store, preset: str) -> tuple[dict | None, str]:
    """The newest stored Table 5 result (``search-cost``) of a search of ``preset``: (values, key)."""
    frame = store.frame(experiment="search-cost")
    best = None
    for key, g in frame.groupby("key", sort=False):
        extra = g.iloc[0]["extra"] or {}
        if extra.get("preset") != preset:
            continue
        created = g.iloc[0]["created"]
        if best is None or created >= best[2]:
            values = dict(zip(g["metric"], g["value"]))
            best = ({**values, "search": extra.get("search", ""), "device": g.iloc[0]["device"]}, key, created)
    return (best[0], best[1]) if best else (None, "")


def ours_of(store, cell: PublishedCell) -> Ours:
    """Our figures of ``cell``'s row (store rows written once, by key)."""
    from .costs import branch_rows, plan_cost_rows

    kind = cell.ours_kind
    info = get_model(cell.model)
    if kind == "none":
        return Ours(kind, reason=f"not comparable: {cell.ours['none']}")
    if kind in ("spec", "method"):
        plan, scheduler, label, teacher_steps = _plan_of(cell)
        key = plan_cost_rows(store, info.cost_preset, plan, scheduler, label, teacher_steps, cell.model)
        values = _cost_values(store, key)
        return Ours(kind, values, [key], note=f"plan {plan.name} on {scheduler} ({len(plan)} grid steps), "
                                              f"avg over {teacher_steps} teacher steps")
    if kind == "branch":
        key, _ = branch_rows(store, info.cost_preset)
        rows = store.get(key) or []
        b = int(cell.ours["branch"])
        got = [r["value"] for r in rows if r["metric"] == "fraction_paper" and r["extra"]["branch"] == b]
        return Ours(kind, {"fraction": got[0] if got else None}, [key])
    from bench.search.presets import get_preset
    from bench.search.setup import space_of

    preset = get_preset(cell.ours.get("search") or cell.ours.get("search_cost"))
    if kind == "search_cost":
        values = {"resolution": _resolution(preset.cost_preset), "budget_g": preset.budget_g}
        stored, key = _stored_search_cost(store, preset.name)
        out = Ours(kind, values, [key] if key else [])
        if stored:
            out.values["gpu_hours"] = stored.get("device_hours")
            out.search = {"stored": stored.get("search", ""), "device": stored.get("device"),
                          "evaluations": stored.get("distinct_evaluations"), "search_s": stored.get("search_s")}
        out.search["preset"] = preset.name
        return out
    # a searched row: the preset's budget and space, and a stored search of it when there is one
    space, cost, budget = space_of(preset)
    full_g = cost.full_macs / G
    search = {"preset": preset.name, "budget_g": budget / G, "budget_total_g": budget * space.grid / G,
              "grid": space.grid, "nfe_range": list(space.nfe_range()), "teacher_g": full_g,
              "min_speedup": full_g / (budget / G)}
    out = Ours(kind, {}, [], search=search,
               note=f"preset {preset.name}: budget {preset.budget_label}, N-segment "
                    f"{'/'.join(map(str, preset.segments))}, branch {'/'.join(map(str, preset.branches))}, interval "
                    f"{'/'.join(map(str, preset.intervals))}")
    from .searched import searched_plan

    found = searched_plan(store, preset.name)
    if found is not None:
        plan, name = found
        key = plan_cost_rows(store, preset.cost_preset, plan, preset.scheduler, f"search {name}", preset.steps,
                             cell.model)
        out.keys.append(key)
        out.values = _cost_values(store, key)
        search["stored"] = name
    return out


# ---- verdicts -------------------------------------------------------------------------------------------------------


def judge(paper: float, ours: float | None, quantity: str, printed: str) -> tuple[str, str]:
    """``(verdict, rule)`` of a number against the paper's: NFE exact; else within :data:`TOLERANCE`, or equal at
    the printed precision."""
    if ours is None or (isinstance(ours, float) and math.isnan(ours)):
        return "not comparable: no value of ours", ""
    if quantity == "nfe":
        return ("match" if round(ours) == round(paper) else "differs"), "exact"
    if abs(ours - paper) <= TOLERANCE * abs(paper):
        return "match", "1 %"
    _, decimals, scale = parse_printed(printed)
    if round(ours * scale, decimals) == round(paper * scale, decimals):
        return "match", f"printed precision ({decimals} decimal{'s' if decimals != 1 else ''})"
    return "differs", "1 % / printed precision"


def _diffs(paper: float, ours) -> tuple[float | None, float | None]:
    if ours is None or paper is None:
        return None, None
    d = ours - paper
    return d, (100 * d / paper if paper else None)


def _fmt(v, unit: str = "") -> str:
    if v is None:
        return ""
    text = f"{v:.4g}" if abs(v) >= 1e-3 or v == 0 else f"{v:.3g}"
    return f"{text} {unit}".strip()


def _row_index(cells) -> dict:
    """(table, group, row_id) -> {quantity: cell}"""
    out: dict = {}
    for c in cells:
        out.setdefault((c.table, c.group, c.row_id), {})[c.quantity] = c
    return out


def _reference(cell: PublishedCell, index: dict, order: dict) -> tuple | None:
    """The row whose MACs a speed-up divides: ``speedup_reference``, else the table group's first row."""
    if cell.speedup_reference:
        return (cell.table, cell.group, cell.speedup_reference)
    return order.get((cell.table, cell.group))


def _macs_cell(cells: dict):
    return cells.get("avg_macs_g") or cells.get("total_macs_g")


def _paper_consistency(cell, index, order) -> str:
    """A note when a printed speed-up is not what the paper's own MACs give."""
    ref = _reference(cell, index, order)
    if ref is None:
        return ""
    mine = _macs_cell(index.get((cell.table, cell.group, cell.row_id), {}))
    theirs = _macs_cell(index.get(ref, {}))
    if mine is None or theirs is None or mine.quantity != theirs.quantity or not mine.value:
        return ""
    implied = theirs.value / mine.value
    _, decimals, _ = parse_printed(cell.printed)
    if round(implied, decimals) != round(cell.value, decimals):
        return (f"the paper's own MACs give {implied:.{decimals + 1}f}x ({_fmt(theirs.value)} / {_fmt(mine.value)}), "
                f"printed {cell.printed}")
    return ""


def _compare_searched(cell: PublishedCell, ours: Ours, ref_ours: Ours | None) -> dict:
    s, q = ours.search, cell.quantity
    stored = s.get("stored")
    value = ours.values.get(q) if stored else None
    if q == "nfe":
        lo, hi = s["nfe_range"]
        inside = lo <= cell.value <= hi
        verdict = (f"budget only: NFE {'inside' if inside else 'outside'} the space's range {lo}-{hi} "
                   f"({s['preset']})")
        return {"ours": value, "ours_text": _fmt(value) if stored else f"{lo}-{hi} (space)", "verdict": verdict,
                "within": inside}
    if q in ("avg_macs_g", "total_macs_g"):
        bound = s["budget_g"] if q == "avg_macs_g" else s["budget_total_g"]
        inside = cell.value <= bound
        what = "budget" if q == "avg_macs_g" else f"budget x {s['grid']} grid steps"
        verdict = f"budget only: {'within' if inside else 'exceeds'} the {s['preset']} {what} ({_fmt(bound)} G)"
        return {"ours": value if stored else bound, "ours_text": (_fmt(value) if stored else f"<= {_fmt(bound)}"),
                "verdict": verdict, "within": inside}
    if q == "speedup":
        if cell.speedup_reference:
            if ref_ours is None or ref_ours.values.get("total_macs_g") is None:
                return {"ours": None, "ours_text": "", "within": None,
                        "verdict": "not comparable: the reference row has no MACs of ours"}
            least = ref_ours.values["total_macs_g"] / s["budget_total_g"]
            if stored and ours.values.get("total_macs_g"):
                value = ref_ours.values["total_macs_g"] / ours.values["total_macs_g"]
        else:
            least = s["min_speedup"]
        _, decimals, _ = parse_printed(cell.printed)
        inside = round(cell.value, decimals) >= round(least, decimals)
        verdict = (f"budget only: {'at or above' if inside else 'below'} the {least:.2f}x the {s['preset']} budget "
                   "guarantees")
        return {"ours": value if stored else least, "ours_text": (_fmt(value) if stored else f">= {least:.3g}"),
                "verdict": verdict, "within": inside}
    return {"ours": None, "ours_text": "", "verdict": f"not comparable: {q} of a searched row", "within": None}


def _verdict_kind(verdict: str) -> str:
    for kind in ("match", "differs", "budget only", "not comparable"):
        if verdict.startswith(kind):
            return kind
    return "not comparable"


def compare_costs(store, cells: list[PublishedCell], progress: bool = False) -> list[dict]:
    """One comparison per published cell (plain dicts, see :func:`run`)."""
    from tqdm.auto import tqdm

    index = _row_index(cells)
    order: dict = {}
    for c in cells:
        order.setdefault((c.table, c.group), (c.table, c.group, c.row_id))
    rows: dict = {}
    firsts = {}
    for c in cells:
        firsts.setdefault((c.table, c.group, c.row_id), c)
    todo = list(firsts.items())
    bar = tqdm(todo, desc="conformance", unit="row", disable=not progress)
    for rid, c in bar:
        bar.set_postfix_str(c.model, refresh=False)
        rows[rid] = ours_of(store, c)
    bar.close()
    out = []
    for c in cells:
        ours = rows[(c.table, c.group, c.row_id)]
        ref = _reference(c, index, order) if c.quantity == "speedup" else None
        ref_ours = rows.get(ref) if ref else None
        note = [c.note] if c.note else []
        rule, within = "", None
        if c.quantity in LATENCY:
            value, text, verdict = None, "", LATENCY_REASON
        elif ours.kind == "none":
            value, text, verdict = None, "", ours.reason
        elif ours.kind == "search":
            got = _compare_searched(c, ours, ref_ours)
            value, text, verdict, within = got["ours"], got["ours_text"], got["verdict"], got["within"]
            if ours.search.get("stored"):
                note.append(f"ours: the best plan of stored search {ours.search['stored']}")
            note.append(ours.note)
        elif ours.kind == "search_cost" and c.quantity == "gpu_hours":
            value = ours.values.get("gpu_hours")
            text = _fmt(value)
            s = ours.search
            why = ("the paper's RTX 3090 hours of a full-size search (B.2: 100 iterations, 1000 images per "
                   "candidate on DDPM / LDM)")
            if s.get("stored"):
                verdict = (f"not comparable: {why}; ours: device hours of stored search {s['stored']} "
                           f"({s.get('evaluations') and int(s['evaluations'])} evaluations on {s.get('device')})")
            else:
                verdict = (f"not comparable: {why}; no stored search of preset {s['preset']} "
                           f"(flexbench search --preset {s['preset']} --seed 0 --store FILE)")
        else:
            value = ours.values.get(c.quantity)
            if c.quantity == "speedup" and c.speedup_reference:
                if ref_ours is None or ref_ours.kind not in ("spec", "method"):
                    value = None
                elif ours.values.get("total_macs_g"):
                    value = ref_ours.values["total_macs_g"] / ours.values["total_macs_g"]
            verdict, rule = judge(c.value, value, c.quantity, c.printed)
            text = _fmt(value)
            if ours.note and c.quantity != "fraction":
                note.append(ours.note)
        if c.quantity == "speedup":
            consistency = _paper_consistency(c, index, order)
            if consistency:
                note.append(consistency)
        d_abs, d_pct = _diffs(c.value, value)
        keys = list(ours.keys) + (list(ref_ours.keys) if ref_ours is not None and c.quantity == "speedup" else [])
        out.append({"id": c.ident, "table": c.table, "group": c.group, "row": c.row, "line": c.line,
                    "row_id": c.row_id, "column": c.column, "model": c.model, "quantity": c.quantity,
                    "printed": c.printed, "paper": c.value, "ours": value, "ours_text": text, "diff_abs": d_abs,
                    "diff_pct": d_pct, "verdict": verdict, "kind": _verdict_kind(verdict), "rule": rule,
                    "within": within, "tolerance": TOLERANCE, "convention": QUANTITIES[c.quantity][2],
                    "source": ours.kind, "keys": list(dict.fromkeys(keys)), "note": "; ".join(n for n in note if n)})
    return out


def counts(comparisons: list[dict]) -> dict:
    """kind -> number of cells (match, differs, budget only, not comparable)."""
    out = {k: 0 for k in ("match", "differs", "budget only", "not comparable")}
    for c in comparisons:
        out[c["kind"]] += 1
    return out


# ---- claims ---------------------------------------------------------------------------------------------------------
REPRODUCED, UNRESOLVED, CONTRADICTED = "reproduced", "not resolved at this n", "contradicted"
MISSING = "not measured yet"


@dataclass(frozen=True)
class Claim:
    id: str
    text: str
    paper: str
    spec: str           # the experiment whose stored results are the evidence
    search_row: str     # its row whose search the evidence needs ("" none)
    rule: str
    caveat: str = ""    # said with the command that measures it


CLAIMS = (
    Claim("speedup-2x", "Flexiffusion reaches >= 2x speed-up (by MACs) with < 5 % FID loss against the teacher",
          "Abstract, Tables 1-3", "table2", "Flexiffusion-D",
          "per Flexiffusion row at >= 2x (1 % tolerance) paired with the teacher: the 5 % margin is 0.05 x the "
          "teacher's FID; reproduced when the paired interval's upper end is below the margin for some row, "
          "contradicted when its lower end is above it for every row, else not resolved"),
    Claim("ahead-of-deepcache", "Flexiffusion has a lower FID than DeepCache at equal or fewer MACs",
          "Tables 1-3, Sec. 5.2-5.4", "table2", "Flexiffusion-B",
          "pairs Flexiffusion - DeepCache with the Flexiffusion row's avg MACs <= DeepCache's (1 % tolerance): "
          "reproduced when some pair's FID is significantly lower (paired interval below 0) and none significantly "
          "higher, contradicted when some is significantly higher and none lower, else not resolved"),
    Claim("rfid-ranks", "rFID ranks candidates like FID with far fewer images", "Tables 4 and 9, Sec. 5.5",
          "table4", "",
          "Kendall's tau against the reference FID ranking: reproduced when rFID's tau >= FID's at every k, rFID at "
          "the smallest k >= FID at the largest, and rFID's tau at the smallest k is significant (p < 0.05); "
          "contradicted when rFID's tau < FID's at every k; else not resolved (n = candidates)"),
    Claim("searched-vs-handcrafted", "The searched schedule beats a handcrafted and a random one: lower FID at lower "
          "MACs", "Table 10, appendix G", "table10", "Flexiffusion (embedded-41)",
          "pairs Flexiffusion - handcrafted (pattern) and - random: reproduced when both are measured, the searched "
          "row has <= MACs (1 % tolerance) and a significantly lower FID in both; contradicted when it has more "
          "MACs or a significantly higher FID in one; else not resolved"),
    Claim("dpm-solver", "Flexiffusion on DPM-Solver beats DPM-Solver-3: lower FID at fewer MACs", "Table 6, Sec. 5.7",
          "table6", "Flexiffusion (cifar10-dpm space)",
          "pairs (Flexiffusion sampled with DPM-Solver) - DPM-Solver at equal or fewer MACs: as for DeepCache",
          caveat="the experiment runner does not apply a search's per-segment DPM-Solver orders yet "
                 "(bench/experiments/searched.py): that row stays unmeasured until it does"),
    Claim("tome-on-top", "ToMe adds on top of a cache schedule: less time per image at the same CLIP score",
          "Table 7, Sec. 5.7", "table7", "",
          "pairs of rows with and without ToMe (same model, method, plan; the latency on the same device and "
          "threads): reproduced when every pair is faster with ToMe (the medians' interquartile ranges do not "
          "overlap) and its CLIP score is within 1 %; contradicted when every pair is slower; else not resolved",
          caveat="specs/table7.toml has no Flexiffusion row: the paper's Flexiffusion + ToMe rows are not measured"),
)


def claim_command(claim: Claim, model: str | None = None) -> str:
    """The commands that store a claim's evidence on ``model`` (default: the first of the spec's models whose row
    has a search preset)."""
    from .spec import load

    spec = load(claim.spec)
    if spec.filled_by:
        return spec.filled_by
    row = next((r for r in spec.rows if r.label == claim.search_row), None)
    presets = (row.search if isinstance(row.search, dict) else {m: row.search for m in spec.models}) if row else {}
    if model is None or model not in spec.models or (row is not None and model not in presets):
        model = next((m for m in spec.models if row is None or m in presets), spec.default_model)
    from .models import fill_command

    info = get_model(model)
    head, _, comment = fill_command(spec.name, model).partition("   # ")
    run = f"{head} --store FILE"
    if row is not None:
        weights = "" if info.shipped else " --weights PATH"
        run = f"flexbench search --preset {presets[model]} --seed 0{weights} --store FILE, then {run}"
    comment = "; ".join(c for c in (comment, claim.caveat) if c)
    return run + (f"   # {comment}" if comment else "")


def _record(store, key: str) -> dict | None:
    rows = store.get(key)
    if not rows:
        return None
    first = rows[0]
    extra = first.get("extra") or {}
    out = {"key": key, "label": first["method"], "method": extra.get("method", ""), "model": first["model"],
           "scheduler": first.get("scheduler") or "", "n_images": first["n_images"], "config": extra.get("config"),
           "device": first.get("device"), "threads": first.get("threads"), "plan_digest": first.get("plan_digest"),
           "extractor": (extra.get("setting") or {}).get("extractor")}
    for r in rows:
        out.setdefault(r["metric"], r["value"])
    return out


def stored_comparisons(store) -> list[dict]:
    """Every stored paired comparison with its two rows' records, one per (model, pair): the most images, newest."""
    frame = store.frame(experiment="comparison")
    found: dict = {}
    for key, g in frame.groupby("key", sort=False):
        first = g.iloc[0]
        extra = first["extra"] or {}
        a, b = _record(store, extra.get("a", "")), _record(store, extra.get("b", ""))
        if a is None or b is None:
            continue
        v = dict(zip(g["metric"], g["value"]))
        item = {"key": key, "model": first["model"], "n_images": int(first["n_images"] or 0), "a": a, "b": b,
                "diff": v.get("fid_diff"), "low": v.get("fid_diff_low"), "high": v.get("fid_diff_high"),
                "significant": bool(extra.get("significant")), "created": first["created"]}
        ident = (item["model"], a["label"], b["label"])
        old = found.get(ident)
        if old is None or (item["n_images"], item["created"]) >= (old["n_images"], old["created"]):
            found[ident] = item
    return list(found.values())


def _pair_text(c: dict, extra: str = "") -> str:
    a, b = c["a"], c["b"]
    return (f"{a['label']} ({_x(a)}) - {b['label']} ({_x(b)}): ΔFID {c['diff']:+.2f} [{c['low']:+.2f}, "
            f"{c['high']:+.2f}]{extra}, n = {c['n_images']}")


def _x(rec: dict) -> str:
    s = rec.get("speedup_paper")
    return f"{s:.2f}x" if s is not None else "?x"


def _fewer_macs(a: dict, b: dict) -> bool:
    ma, mb = a.get("avg_macs_paper_g"), b.get("avg_macs_paper_g")
    return ma is not None and mb is not None and ma <= mb * (1 + TOLERANCE)


FEATURE_DIMS = {"digits-cnn": 128, "inception-v3-compat": 2048}


def _feature_dim(extractor: str | None) -> int:
    """The FID feature dimension of an extractor (2048, Inception's, when unknown)."""
    try:
        from bench.quality.extractors import KNOWN_EXTRACTORS

        dim = getattr(KNOWN_EXTRACTORS.get(extractor or ""), "fid_dim", None)
    except ImportError:
        dim = None
    return int(dim or FEATURE_DIMS.get(extractor or "", 2048))


def _too_few(c: dict) -> str:
    """Why a paired FID comparison cannot decide a claim ("" when it can): FID needs more images than feature
    dimensions (below that the covariance is singular and FID meaningless, docs/experiments.md)."""
    dim = _feature_dim(c["a"].get("extractor"))
    if c["n_images"] <= dim:
        return (f"; {c['n_images']} images in {dim} feature dimensions ({c['a'].get('extractor') or 'features'}): "
                "FID is not meaningful, left out")
    return ""


def _is_teacher(rec: dict) -> bool:
    return rec["method"] == "teacher" or "teacher" in rec["label"].lower() or (
        rec["method"] in ("ddim", "plms") and (rec.get("speedup_paper") or 0) >= 0.97)


def _by_model(items, model_of) -> dict:
    out: dict = {}
    for it in items:
        out.setdefault(model_of(it), []).append(it)
    return out


def _ahead(pairs: list[dict]) -> tuple[str, list[str]]:
    """Verdict of "a is ahead of b at equal or fewer MACs" over ``pairs``."""
    evidence, better, worse, eligible = [], 0, 0, 0
    for c in pairs:
        ok = _fewer_macs(c["a"], c["b"])
        few = _too_few(c)
        sig = "significant" if c["significant"] else "not significant"
        evidence.append(_pair_text(c, f" ({sig})") + ("" if ok else "; not at equal or fewer MACs: left out") + few)
        if not ok or few:
            continue
        eligible += 1
        better += c["significant"] and c["high"] < 0
        worse += c["significant"] and c["low"] > 0
    if not eligible:
        return UNRESOLVED, evidence + ["no pair at equal or fewer MACs with enough images"]
    if better and not worse:
        return REPRODUCED, evidence
    if worse and not better:
        return CONTRADICTED, evidence
    return UNRESOLVED, evidence


def _claim_rows(claim: Claim, results: list[tuple[str, str, list[str], list[str]]], note: str = "",
                model: str | None = None) -> list[dict]:
    """One row per model: (model, verdict, evidence lines, keys); none: "not measured yet: <command>"."""
    if not results:
        return [{"claim": claim.id, "text": claim.text, "paper": claim.paper, "model": model or "",
                 "verdict": f"{MISSING}: {claim_command(claim, model)}", "evidence": [note] if note else [],
                 "keys": [], "rule": claim.rule}]
    notes = ([note] if note else []) + ([f"note: {claim.caveat}"] if claim.caveat else [])
    return [{"claim": claim.id, "text": claim.text, "paper": claim.paper, "model": model, "verdict": verdict,
             "evidence": evidence + notes, "keys": keys, "rule": claim.rule}
            for model, verdict, evidence, keys in results]


def _keys_of(pairs) -> list[str]:
    return [k for c in pairs for k in (c["key"], c["a"]["key"], c["b"]["key"])]


def _claim_speedup(claim, comparisons):
    pairs = [c for c in comparisons if c["a"]["method"] == "flexiffusion" and _is_teacher(c["b"])]
    results = []
    for model, group in _by_model(pairs, lambda c: c["model"]).items():
        evidence, verdicts = [], []
        for c in group:
            fast = (c["a"].get("speedup_paper") or 0) >= 2 * (1 - TOLERANCE)
            teacher_fid = c["b"].get("fid")
            if not fast or teacher_fid is None:
                evidence.append(_pair_text(c) + "; below 2x: left out")
                continue
            few = _too_few(c)
            if few:
                evidence.append(_pair_text(c) + few)
                verdicts.append(UNRESOLVED)
                continue
            margin = 0.05 * teacher_fid
            v = REPRODUCED if c["high"] < margin else CONTRADICTED if c["low"] > margin else UNRESOLVED
            verdicts.append(v)
            evidence.append(_pair_text(c, f" vs the 5 % margin {margin:.2f} (teacher FID {teacher_fid:.2f}): "
                                          f"{100 * c['diff'] / teacher_fid:+.1f} %") + f" -> {v}")
        if not verdicts:
            verdict = f"{MISSING}: a Flexiffusion row at >= 2x paired with the teacher: {claim_command(claim, model)}"
        elif REPRODUCED in verdicts:
            verdict = REPRODUCED
        elif all(v == CONTRADICTED for v in verdicts):
            verdict = CONTRADICTED
        else:
            verdict = UNRESOLVED
        results.append((model, verdict, evidence, _keys_of(group)))
    return _claim_rows(claim, results)


def _claim_ahead(claim, comparisons, keep):
    pairs = [c for c in comparisons if keep(c)]
    results = []
    for model, group in _by_model(pairs, lambda c: c["model"]).items():
        verdict, evidence = _ahead(group)
        results.append((model, verdict, evidence, _keys_of(group)))
    return results


def _claim_handcrafted(claim, comparisons):
    pairs = [c for c in comparisons if c["a"]["method"] == "flexiffusion" and c["b"]["method"] in ("pattern", "random")]
    results = []
    for model, group in _by_model(pairs, lambda c: c["model"]).items():
        evidence, kinds, wins, losses = [], set(), set(), 0
        for c in group:
            kinds.add(c["b"]["method"])
            fewer = _fewer_macs(c["a"], c["b"])
            sig = "significant" if c["significant"] else "not significant"
            ma, mb = (r.get("avg_macs_paper_g", float("nan")) for r in (c["a"], c["b"]))
            macs = f"avg MACs {ma:.4g} vs {mb:.4g} G"
            few = _too_few(c)
            evidence.append(_pair_text(c, f" ({sig}); {macs}") + few)
            if not fewer:
                losses += 1
            elif few:
                continue
            elif c["significant"] and c["low"] > 0:
                losses += 1
            elif c["significant"] and c["high"] < 0:
                wins.add(c["b"]["method"])
        if losses:
            verdict = CONTRADICTED
        elif kinds == {"pattern", "random"} and wins == kinds:
            verdict = REPRODUCED
        else:
            verdict = UNRESOLVED
        missing = {"pattern", "random"} - kinds
        if missing:
            evidence.append(f"not measured: Flexiffusion - {' / '.join(sorted(missing))}")
        results.append((model, verdict, evidence, _keys_of(group)))
    return _claim_rows(claim, results)


def _claim_rfid(claim, store):
    frame = store.frame(experiment="ablation-summary")
    summaries = []
    for key, g in frame.groupby("key", sort=False):
        table: dict = {}
        for _, r in g.iterrows():
            table.setdefault((r["method"], int(r["n_images"])), {})[r["metric"]] = r["value"]
        n = max((v.get("n_candidates") or 0) for v in table.values())
        summaries.append({"key": key, "model": g.iloc[0]["model"], "created": g.iloc[0]["created"], "table": table,
                          "n": int(n)})
    best: dict = {}
    for s in summaries:
        old = best.get(s["model"])
        if old is None or (s["n"], s["created"]) >= (old["n"], old["created"]):
            best[s["model"]] = s
    results = []
    for model, s in best.items():
        t = s["table"]
        ks = sorted(k for m, k in t if m == "rfid" and (("fid", k) in t))
        tau = lambda m, k: t.get((m, k), {}).get("kendall_tau")   # noqa: E731
        evidence = []
        for k in sorted({k for _, k in t}):
            parts = [f"{m} {tau(m, k):+.3f}" for m in ("rfid", "fid", "mse") if tau(m, k) is not None]
            p = t.get(("rfid", k), {}).get("kendall_p")
            evidence.append(f"k = {k}: tau " + ", ".join(parts) + (f" (rFID p = {p:.2g})" if p is not None else ""))
        ref = next(iter(t.values()), {}).get("reference_tau")
        evidence.append(f"{s['n']} candidates; reference FID ranking's own half-vs-half tau "
                        f"{ref:.3f}" if ref is not None else f"{s['n']} candidates")
        usable = [k for k in ks if tau("rfid", k) is not None and tau("fid", k) is not None]
        if not usable:
            verdict = UNRESOLVED
        else:
            ahead = [tau("rfid", k) >= tau("fid", k) for k in usable]
            p_small = t.get(("rfid", usable[0]), {}).get("kendall_p")
            few = tau("rfid", usable[0]) >= tau("fid", usable[-1])
            if all(ahead) and few and p_small is not None and p_small < 0.05:
                verdict = REPRODUCED
            elif not any(ahead):
                verdict = CONTRADICTED
            else:
                verdict = UNRESOLVED
        results.append((model, verdict, evidence, [s["key"]]))
    return _claim_rows(claim, results)


def _latencies(store) -> dict:
    """(model, label, device, threads) -> the newest latency record."""
    frame = store.frame(experiment="latency")
    out: dict = {}
    for key, g in frame.groupby("key", sort=False):
        first = g.iloc[0]
        ident = (first["model"], first["method"], first["device"], first["threads"])
        rec = {"key": key, "created": first["created"], **dict(zip(g["metric"], g["value"]))}
        if ident not in out or rec["created"] >= out[ident]["created"]:
            out[ident] = rec
    return out


def _claim_tome(claim, store):
    from bench.rows import EXPERIMENT as ROWS

    frame = store.frame(experiment=ROWS)
    rows = [_record(store, key) for key in dict.fromkeys(frame["key"])]
    rows = [r for r in rows if r is not None and isinstance(r.get("config"), dict)]
    lat = _latencies(store)
    plain = {}
    for r in rows:
        cfg = r["config"]
        if not cfg.get("tome"):
            ident = (r["model"], r["n_images"], cfg.get("method"), repr(cfg.get("config")), r["plan_digest"])
            plain[ident] = r
    pairs = []
    for r in rows:
        cfg = r["config"]
        if cfg.get("tome"):
            other = plain.get((r["model"], r["n_images"], cfg.get("method"), repr(cfg.get("config")),
                               r["plan_digest"]))
            if other is not None:
                pairs.append((other, r))
    results = []
    for model, group in _by_model(pairs, lambda p: p[0]["model"]).items():
        evidence, keys, faster, slower = [], [], 0, 0
        for without, with_ in group:
            keys += [without["key"], with_["key"]]
            common = [(d, t) for (m, lab, d, t) in lat if m == model and lab == without["label"]
                      and (m, with_["label"], d, t) in lat]
            if common:
                d, t = common[0]
                lw, lt = lat[(model, without["label"], d, t)], lat[(model, with_["label"], d, t)]
                keys += [lw["key"], lt["key"]]
                mw, mt = lw.get("latency_s_per_image"), lt.get("latency_s_per_image")
                iw, it = lw.get("latency_iqr_s_per_image") or 0, lt.get("latency_iqr_s_per_image") or 0
                timing = f"s/image (batch 8, {d}, {t} threads) {mw:.4f} -> {mt:.4f} (IQR {iw:.4f} / {it:.4f})"
            else:
                mw, mt = without.get("generation_s_per_image"), with_.get("generation_s_per_image")
                iw = it = 0.0
                timing = (f"generation s/image {mw:.4f} -> {mt:.4f} (no controlled latency stored: the generation "
                          "pass's wall time)") if mw is not None and mt is not None else "no timing stored"
            cw, ct = without.get("clip_score"), with_.get("clip_score")
            clip_ok = cw is None or ct is None or abs(ct - cw) <= TOLERANCE * abs(cw)
            clip = f"; CLIP {cw:.2f} -> {ct:.2f}" if cw is not None and ct is not None else ""
            evidence.append(f"{without['label']} / {with_['label']}: {timing}{clip}, n = {without['n_images']}")
            if mw is None or mt is None:
                continue
            if mt + it / 2 < mw - iw / 2 and clip_ok:
                faster += 1
            elif mt - it / 2 > mw + iw / 2:
                slower += 1
        verdict = (REPRODUCED if faster == len(group) else CONTRADICTED if slower == len(group) else UNRESOLVED)
        results.append((model, verdict, evidence, keys))
    return _claim_rows(claim, results)


def check_claims(store, models: list[str] | None = None) -> list[dict]:
    """One row per claim and model it was measured on (plain dicts): verdict, evidence lines, store keys."""
    comparisons = stored_comparisons(store)
    by_id = {c.id: c for c in CLAIMS}
    out = []
    out += _claim_speedup(by_id["speedup-2x"], comparisons)
    out += _claim_rows(by_id["ahead-of-deepcache"], _claim_ahead(
        by_id["ahead-of-deepcache"], comparisons,
        lambda c: c["a"]["method"] == "flexiffusion" and c["b"]["method"].startswith("deepcache")))
    out += _claim_rfid(by_id["rfid-ranks"], store)
    out += _claim_handcrafted(by_id["searched-vs-handcrafted"], comparisons)
    related = [c for c in comparisons if c["a"]["method"] == "flexiffusion" and c["b"]["method"].startswith("dpm")
               and not c["a"]["scheduler"].startswith("dpm")]
    note = "; ".join("related, not the claim (Flexiffusion sampled with DDIM): " + _pair_text(c) for c in related)
    out += _claim_rows(by_id["dpm-solver"], _claim_ahead(
        by_id["dpm-solver"], comparisons,
        lambda c: c["a"]["method"] == "flexiffusion" and c["a"]["scheduler"].startswith("dpm")
        and c["b"]["method"].startswith("dpm")), note=note)
    out += _claim_tome(by_id["tome-on-top"], store)
    if models:
        kept = []
        for claim in CLAIMS:
            mine = [r for r in out if r["claim"] == claim.id and _of_models(r["model"], models)]
            kept += mine or [r for m in models for r in _claim_rows(claim, [], model=m)]
        out = kept
    return out


def _of_models(stored: str, models: list[str]) -> bool:
    """Whether a stored row's model (a bundle name, an ablation's ``loader:folder``) is one of ``models``."""
    if not stored:
        return False
    for m in models:
        loader = get_model(m).loader if m in MODELS else m
        if stored in (m, loader) or str(stored).split(":")[0] == loader:
            return True
    return False


# ---- the stored result ----------------------------------------------------------------------------------------------


def conformance_key(digest: str, models, keys: list[str]) -> str:
    from bench.cache import stable_hash
    from bench.results import result_key

    return result_key(EXPERIMENT, stable_hash({"version": VERSION, "published": digest, "tolerance": TOLERANCE,
                                               "models": sorted(models or []), "keys": sorted(set(keys))}))


def _result_rows(comparisons: list[dict], claims: list[dict], digest: str) -> list[dict]:
    rows = []
    for i, c in enumerate(comparisons):
        extra = {"part": "cost", "index": i, "published": digest, "paper_convention": PAPER_CONVENTION,
                 **{k: v for k, v in c.items() if k not in ("paper", "ours", "diff_abs", "diff_pct")}}
        common = {"experiment": EXPERIMENT, "method": c["id"], "model": c["model"], "weights": "random",
                  "n_images": 0, "extra": extra}
        for metric, field_ in (("paper_value", "paper"), ("ours_value", "ours"), ("diff_abs", "diff_abs"),
                               ("diff_pct", "diff_pct")):
            value = c[field_]
            rows.append({**common, "metric": metric, "value": None if value is None else float(value)})
    for i, c in enumerate(claims):
        rows.append({"experiment": EXPERIMENT, "method": f"claim {c['claim']}", "model": c["model"] or None,
                     "n_images": 0, "metric": "claim_evidence", "value": float(len(c["keys"])),
                     "extra": {"part": "claim", "index": i, **c}})
    return rows


@dataclass
class Outcome:
    key: str
    reused: bool
    counts: dict
    comparisons: list
    claims: list


def run(store, models: list[str] | None = None, published=None, progress: bool = False) -> Outcome:
    """Compare every published cell of ``models`` (default: all) and check the claims; the whole comparison stored
    once as ``conformance/<hash>`` (reused when nothing it read changed)."""
    cells = load_published(published)
    if models:   # a model the paper prints no cell of (an embedded stand-in) contributes its claim evidence only
        for m in models:
            get_model(m)
        cells = [c for c in cells if c.model in models]
    comparisons = compare_costs(store, cells, progress)
    claims = check_claims(store, models)
    digest = published_digest(published)
    keys = [k for c in comparisons for k in c["keys"]] + [k for c in claims for k in c["keys"]]
    key = conformance_key(digest, models, keys)
    result, reused = store.get_or_put(key, lambda: _result_rows(comparisons, claims, digest))
    return Outcome(key, reused, counts(comparisons), comparisons, claims)


def read(store, key: str) -> tuple[list[dict], list[dict]]:
    """(cost comparisons, claims) of a stored conformance result, as :func:`run` computed them."""
    rows = store.get(key)
    if not rows:
        raise UserError(f"no conformance result {key!r} in the store: run flexbench conformance first")
    cost: dict = {}
    claims = []
    for r in rows:
        extra = r["extra"] or {}
        if extra.get("part") == "claim":
            claims.append({k: v for k, v in extra.items() if k not in ("part", "index")})
            continue
        item = cost.setdefault(extra["index"], {k: v for k, v in extra.items() if k not in ("part", "index")})
        name = {"paper_value": "paper", "ours_value": "ours", "diff_abs": "diff_abs", "diff_pct": "diff_pct"}
        item[name[r["metric"]]] = r["value"]
    return [cost[i] for i in sorted(cost)], claims


__all__ = ["PublishedCell", "load_published", "parse_printed", "compare_costs", "check_claims", "run", "read",
           "counts", "judge", "CLAIMS", "QUANTITIES", "TOLERANCE", "PAPER_CONVENTION", "PUBLISHED_FILE"]
