"""Every experiment spec rendered from what the real writers store (issue 21, item 3).

For each spec (``bench.experiments.spec.known()``) and each of its models that ships with the suite (``embedded``,
``embedded-t2i``), the test fills a store only through the real commands (``bench.cli.main``), at tiny sizes:

1. ``flexbench experiment NAME --model M --images 10 --bootstrap 2`` measures the rows it can and renders;
2. every cell of the rendered ``table.md`` is a number (with its bootstrap interval) or ``<why> [n]``, where footnote
   ``[n]`` names the command that fills it: a real ``flexbench`` invocation (``bench.cli.parse_invocation`` accepts
   it once FILE is a path), whose provenance row names the same command;
3. each footnoted command is run as printed, with smoke flags appended (argparse keeps the last value, so
   ``--images 10 --iterations 1 --initial 2 ...`` shrink a ``flexbench search``; ``--candidates 3 --k 4,8`` an
   ``ablation``); then ``flexbench experiment`` again: every cell is a number, the rows measured in step 1 are reused
   from the store by key, and nothing says "search [n]" or "not yet filled" any more.

No row is written by hand.  One store (and one teacher cache) per model is shared by all the specs of the module,
so rows, teachers and searches are reused by key across specs (table10 then table5 read the same search).

Tiers (idle 2-core AMD EPYC host, shared store, so later specs reuse teachers and rows).  A row measures its
controlled latency only where its table shows a latency column.

* default tier, about 40 s together: figB1 on embedded and embedded-t2i, fig4, table6 (21 s).
* slow tier (``pytest -m slow``; ``.ci/run`` runs it after the default run), about 9 minutes together (moved here
  from the default tier to keep the README's test run inside 15 minutes: table10, 53 s, with one tiny embedded-41
  search and its row; table5, rendering table10's search; figD1, 25 s: four tiny searches, one per restricted
  dimension, and their rows); table2 (158 s:
  three tiny searches, 12 rows, and AutoDiffusion's own search at smoke size through
  ``flexbench experiment --set``), table3 (138 s) and table7 (64 s: PLMS 50 with guidance on embedded-t2i, a tiny
  embedded-t2i-27 search), table1 (58 s: 250-step rows), figH1 (29 s: nine DeepCache rows), table4 / table9 (9 s;
  tests/test_tables_from_writers.py renders them from ``flexbench ablation`` in the default tier too).
"""
from __future__ import annotations

import contextlib
import io
import json
import re
import shlex

import pytest

from bench.cli import main, parse_invocation
from bench.experiments.models import get_model
from bench.experiments.spec import known, load
from bench.results import METRICS, header
from reports.check import CELL_NUMBER, FOOTNOTE   # the same cell grammar the smoke matrix checks

ROWS = ["--images", "10", "--bootstrap", "2", "--quiet"]
# appended to a footnoted command of that writer (the last value of an option wins)
SMOKE = {
    "search": ["--images", "10", "--iterations", "1", "--initial", "2", "--children", "2", "--parents", "2",
               "--threads", "1", "--batch-size", "10"],
    "ablation": ["--candidates", "3", "--k", "4,8", "--threads", "1", "--batch-size", "8"],
}
DEFAULT = [("figB1", "embedded"), ("figB1", "embedded-t2i"), ("fig4", "embedded"), ("table6", "embedded")]
SLOW = [("table10", "embedded"), ("table5", "embedded"), ("figD1", "embedded"),
        ("table1", "embedded"), ("figH1", "embedded"), ("table3", "embedded-t2i"),
        ("table7", "embedded-t2i"), ("table4", "embedded"), ("table9", "embedded")]
HOURS = [("table2", "embedded")]   # AutoDiffusion's own search inside a row: smoke size via SPEC_FLAGS

# per-spec smoke flags of `flexbench experiment` (rows that search inside them: the search at its smallest; the
# overridden fields are part of the rows' config and key)
SPEC_FLAGS = {"table2": ["--set", "autodiffusion.search_images=8", "--set",
                         'autodiffusion.evolution={"population": 3, "top_k": 1, "mutation": 2, "crossover": 1, '
                         '"epochs": 1, "stage1_epochs": 1, "ramp_epochs": 1}']}

CELL_MISSING = re.compile(r"^(search|needs weights|not yet filled: flexbench [a-z-]+|not stored) \[(\d+)\]$")


def test_every_spec_and_shipped_model_has_a_test():
    shipped = {(name, m) for name in known() for m in load(name).models if get_model(m).shipped}
    assert shipped == set(DEFAULT) | set(SLOW) | set(HOURS)
    assert len(shipped) == len(DEFAULT) + len(SLOW) + len(HOURS)


def _main(argv) -> str:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        rc = main([str(a) for a in argv])
    assert rc == 0, f"flexbench {shlex.join(map(str, argv))} exited {rc}: {err.getvalue()[-2000:]}"
    return out.getvalue()


@pytest.fixture(scope="module")
def stores(tmp_path_factory):
    """model -> (store, cache folder, output root): one of each per model, shared by the module's tests."""
    root = tmp_path_factory.mktemp("specs")
    cache = root / "cache"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("FLEXBENCH_CACHE", str(cache))   # the experiment command's teacher cache: not the user's
        yield {m: (root / f"{m}.sqlite", cache, root / m) for m in ("embedded", "embedded-t2i")}


def _render(name, model, store, out) -> tuple[list[str], list[dict[str, str]], dict[int, str], dict]:
    """Run and render ``name``: (headers, rows as {header: cell} with the label under "", footnotes, provenance)."""
    _main(["experiment", name, "--model", model, *ROWS, *SPEC_FLAGS.get(name, []), "--store", store, "--out", out])
    md = (out / name / "table.md").read_text()
    lines = [line for line in md.splitlines() if line.startswith("|")]
    split = [[c.strip() for c in line.strip().strip("|").split("|")] for line in lines]
    heads = split[0]
    rows = [dict(zip(heads, cells)) for cells in split[2:]]
    notes = {}
    for line in md.splitlines():
        m = FOOTNOTE.match(line)
        if m:
            notes[int(m.group(1))] = m.group(2)
    return heads, rows, notes, json.loads((out / name / "provenance.json").read_text())


def _invocation(command: str, store) -> list[str]:
    """The words after ``flexbench`` of a footnoted command (FILE -> the store; ", then this command again" is the
    instruction that follows it)."""
    assert command.startswith("flexbench "), command
    assert "#" not in command, f"a shipped model's command needs no weights: {command}"
    words = shlex.split(command.split(", then ")[0].replace("FILE", str(store)))
    assert parse_invocation(words[1:]) == "", command
    return words[1:]


def _check_cells(spec, model, heads, rows, notes, prov) -> dict[int, str]:
    """Every cell a number (a field column such as model or device: its stored value) or ``<why> [n]`` with
    footnote n a real invocation; returns the footnotes used."""
    assert rows, f"{spec.name} on {model}: no rows"
    fields = {header(c) for c in spec.columns if c in METRICS and METRICS[c].field}
    used = {}
    by_label = {p["label"]: p for p in prov["rows"]}
    for row in rows:
        label = row[heads[0]]
        for head in heads[1:]:
            cell = row[head]
            if head == "src" or CELL_NUMBER.match(cell):
                continue
            if head in fields and cell and not CELL_MISSING.match(cell):
                assert cell == model if head == header("model") else re.fullmatch(r"[\w:.-]+", cell), cell
                continue
            missing = CELL_MISSING.match(cell)
            assert missing, f"{spec.name} on {model}, row {label!r}, column {head!r}: {cell!r} is neither a number " \
                            "nor names the command that fills it"
            n = int(missing.group(2))
            assert n in notes, f"{spec.name}: {cell!r} has no footnote [{n}]"
            used[n] = notes[n]
            if label in by_label:   # the provenance of the row names the same command
                assert by_label[label]["command"] == notes[n]
    return used


def _fill_and_check(name, model, stores, tmp_path):
    spec = load(name, parse_invocation)
    store, cache, out = stores[model]
    heads, rows, notes, prov = _render(name, model, store, tmp_path / "before")
    if spec.layout == "rows":   # the spec's columns, and its rows for this model (or the writer's, filled_by)
        assert heads[1:] == [*(header(c) for c in spec.columns), "src"]
        if spec.rows:
            from bench.experiments.runner import prepared_rows

            assert [r[heads[0]] for r in rows] == [row.label for row, _ in prepared_rows(spec, model)]
    used = _check_cells(spec, model, heads, rows, notes, prov)
    for i, command in enumerate(dict.fromkeys(used.values())):   # each writer as its footnote names it, smoke sizes
        words = _invocation(command, store)
        writer = words[0]
        assert writer in SMOKE, f"{spec.name}: no smoke flags known for `flexbench {writer}` ({command})"
        _main([*words, *SMOKE[writer], "--cache-dir", cache, "--out", out / f"{name}-{writer}-{i}"])
    measured = {p["label"] for p in prov["rows"] if p["status"] == "measured"}
    heads, rows, notes, prov = _render(name, model, store, tmp_path / "after")
    assert _check_cells(spec, model, heads, rows, notes, prov) == {}, f"{spec.name} on {model}: still unfilled"
    assert not notes or list(notes.values()) == [spec.filled_by]   # a filled_by table keeps naming its writer
    statuses = {p["label"]: p["status"] for p in prov["rows"]}
    assert all(s in ("measured", "reused") for s in statuses.values()), statuses
    assert all(statuses[label] == "reused" for label in measured if label in statuses)   # reused by key
    assert all(p["sources"] for p in prov["rows"]), "a filled row without the store rows it came from"
    return spec, rows


@pytest.mark.parametrize("name,model", DEFAULT)
def test_spec_rendered_from_real_writers(name, model, stores, tmp_path):
    spec, rows = _fill_and_check(name, model, stores, tmp_path)
    if name == "table5":   # one row per stored search: those this module ran on the model (e.g. table10's)
        from bench.experiments.searched import stored_searches
        from bench.store import ResultStore

        with ResultStore(stores[model][0]) as store:
            assert sorted(r[""] for r in rows) == stored_searches(store)


@pytest.mark.slow
@pytest.mark.parametrize("name,model", SLOW)
def test_slow_spec_rendered_from_real_writers(name, model, stores, tmp_path):
    _fill_and_check(name, model, stores, tmp_path)


@pytest.mark.slow
@pytest.mark.parametrize("name,model", HOURS)
def test_spec_with_autodiffusion_rendered_from_real_writers(name, model, stores, tmp_path):
    """table2: its "AutoDiffusion 10" row runs AutoDiffusion's own search, here at smoke size (``--set``: 8 images
    per evaluation, population 3, one epoch; at the spec's defaults, 256 images and population 50, it takes hours)."""
    _fill_and_check(name, model, stores, tmp_path)
