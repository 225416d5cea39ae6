"""Experiments as data (bench/experiments) and their renderers (reports): strict spec parsing, the CLI's bad input,
and a tiny store of synthetic rows rendered to markdown / LaTeX / CSV / provenance / manifest / PNG."""
import json
from pathlib import Path

import pytest

from bench.cli import main
from bench.experiments.spec import known, load, parse
from bench.store import ResultStore
from flexiffusion.errors import UserError

PAPER = ["table1", "table2", "table3", "table4", "table5", "table6", "table7", "table9", "table10",
         "fig4", "figB1", "figD1", "figH1"]
TINY = '''
title = "tiny"
kind = "table"
paper = "p"
models = ["embedded"]
columns = ["nfe", "avg_macs_paper_g", "fid", "rfid"]
compare = [["A", "B"]]
[[rows]]
label = "A"
method = "deepcache"
config = {steps = 10, interval = 2, branch = 1}
[[rows]]
label = "B"
method = "ddim"
config = {steps = 10}
'''


def test_every_paper_table_and_figure_is_declared_and_parses():
    assert set(PAPER) <= set(known())
    from bench.experiments.runner import prepared_rows

    for name in known():
        spec = load(name)
        for model in spec.models:
            prepared_rows(spec, model)   # every row's method and config checked against the registry


def test_a_typo_in_a_field_names_the_field_and_the_file(tmp_path):
    with pytest.raises(UserError, match=r"x\.toml: the experiment has no field 'colums'"):
        parse(TINY.replace("columns", "colums"), "x", Path("x.toml"))
    with pytest.raises(UserError, match=r"x\.toml: rows\[1\] has no field 'lable'"):
        parse(TINY.replace('label = "B"', 'lable = "B"'), "x", Path("x.toml"))
    with pytest.raises(UserError, match=r"x\.toml: the experiment\.images = 'many': expected int"):
        parse(TINY.replace('paper = "p"', 'paper = "p"\nimages = "many"'), "x", Path("x.toml"))
    with pytest.raises(UserError, match="compare entry"):
        parse(TINY.replace('["A", "B"]', '["A", "C"]'), "x", Path("x.toml"))


def test_unknown_experiment_is_one_line_listing_the_known_ones(capsys):
    assert main(["experiment", "tabel2"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "unknown experiment 'tabel2'" in err[0] and "table2" in err[0]
    assert main(["experiment", "table2", "--model", "sd-v1.5", "--dry-run"]) == 2
    assert main(["experiment", "--list"]) == 0
    assert "figB1" in capsys.readouterr().out


def test_dry_run_writes_nothing(tmp_path, capsys):
    assert main(["experiment", "table2", "--dry-run", "--store", str(tmp_path / "s.sqlite"),
                 "--out", str(tmp_path / "out")]) == 0
    assert "DeepCache-B: planned" in capsys.readouterr().out
    assert list(tmp_path.iterdir()) == []


def test_render_rows_the_real_writers_stored(tmp_path):
    """The two rows of TINY measured by the row harness (10 images) and their paired comparison, rendered: values
    with bootstrap intervals, the comparison's verdict, LaTeX / CSV / provenance / manifest from those rows."""
    import re

    from bench.experiments.runner import Options, fill
    from reports.experiment import render

    spec = parse(TINY, "tiny", Path("tiny.toml"))
    with ResultStore(tmp_path / "s.sqlite") as store:
        cells, comparisons = fill(spec, store, Options("embedded", images=10, bootstrap=5, progress=False,
                                                       cache_dir=str(tmp_path / "cache")))
        assert [c.status for c in cells] == ["measured", "measured"] and comparisons[0].key
        done = render(spec, "embedded", cells, comparisons, store, tmp_path / "out")
        stored = {c.label: store.result(c.keys[-1]).values() for c in cells}
    out, md = done.folder, done.markdown
    assert md == (out / "table.md").read_text()
    a_line = next(line for line in md.splitlines() if line.startswith("| A "))
    fid = f"{stored['A']['fid']:.2f}"
    assert re.search(re.escape(fid) + r" \[-?\d+\.\d\d, \d+\.\d\d\]", a_line), a_line
    assert f"{stored['A']['nfe']:.0f}" in a_line and "needs weights" not in md
    assert re.search(r"A vs B: ΔFID = [+-]\d+\.\d\d, 95% paired bootstrap interval .*\*\*(not )?significant\*\*", md)
    tex = (out / "table.tex").read_text()
    assert r"\begin{tabular}" in tex and fid in tex
    csv = (out / "table.csv").read_text()
    assert repr(stored["A"]["fid"])[:8] in csv
    prov = json.loads((out / "provenance.json").read_text())
    a = prov["rows"][0]
    assert a["id"] == "p1" and a["sources"][-1]["key"] == cells[0].keys[-1] and a["sources"][-1]["n_images"] == 10
    assert a["sources"][-1]["device"] == "cpu" and a["sources"][-1]["weights"].startswith("embedded:")
    files = {f["file"] for f in json.loads((out / "manifest.json").read_text())["files"]}
    assert {"table.md", "table.tex", "table.csv", "provenance.json"} <= files and files == {f["file"] for f in done.files}
    assert all((out / f).exists() for f in files)


def test_pareto_front_and_schedule_plans():
    from baselines.schedules import pattern_plan, random_plan
    from reports.figures import pareto_front

    assert pareto_front([(1, 5), (2, 3), (3, 4), (0.5, 9)]) == [3, 0, 1]
    assert pattern_plan("f p3 p3", 7, "h").tokens() == ["f", "p3", "p3", "f", "p3", "p3", "f"]
    r = random_plan(0, 100, [1, 2, 3], [1, 2], "r")
    assert len(r) == 100 and r.tokens()[0] == "f" and r == random_plan(0, 100, [1, 2, 3], [1, 2], "r")
    with pytest.raises(UserError, match="start with a full step"):
        pattern_plan("p1 f", 4, "x")


def test_cost_cells_without_weights_come_from_the_architecture(tmp_path, monkeypatch):
    """A model whose weights are absent: NFE / avg MACs / speed-up filled (random-weight architecture), the
    quality cells say "needs weights" with the command. The embedded preset stands in (cheap to trace)."""
    from dataclasses import replace

    from bench.experiments import models
    from bench.experiments.runner import Options, fill

    monkeypatch.setitem(models.MODELS, "embedded", replace(models.MODELS["embedded"], shipped=False,
                                                           weights_hint="a folder"))
    spec = parse(TINY, "tiny", Path("tiny.toml"))
    with ResultStore(tmp_path / "s.sqlite") as store:
        cells, comparisons = fill(spec, store, Options("embedded", progress=False))
        assert [c.status for c in cells] == ["cost only", "cost only"]
        assert cells[0].command == "flexbench experiment tiny --model embedded --weights PATH   # PATH: a folder"
        values = {r["metric"]: r["value"] for r in store.get(cells[1].keys[0])}
        assert values["nfe"] == 10 and values["speedup_paper"] == pytest.approx(10.0)    # DDIM 10 vs teacher 100
        assert store.get(cells[1].keys[0])[0]["weights"] == "random"
        dc = {r["metric"]: r["value"] for r in store.get(cells[0].keys[0])}
        assert 100 / 10 < dc["speedup_paper"] < 100 / 5 and dc["nfe"] == 10   # 5 full + 5 partial(1) steps
        assert comparisons[0].key == "" and "no quality rows" in comparisons[0].reason
        again, _ = fill(spec, store, Options("embedded", progress=False))
        assert [c.keys for c in again] == [c.keys for c in cells]                    # reused by key


@pytest.mark.slow
def test_an_experiment_end_to_end_on_the_embedded_model(tmp_path, monkeypatch):
    """table6 on 20 images (FID there is meaningless, n < d: this checks the plumbing, not the numbers)."""
    monkeypatch.setenv("FLEXBENCH_CACHE", str(tmp_path / "cache"))
    argv = ["experiment", "table6", "--images", "20", "--bootstrap", "10", "--store", str(tmp_path / "s.sqlite"),
            "--out", str(tmp_path / "out"), "--quiet"]
    assert main(argv) == 0
    md = (tmp_path / "out" / "table6" / "table.md").read_text()
    assert "DPM-Solver-3 15" in md and "paired bootstrap" in md
    assert main(argv) == 0   # second run: everything reused


def test_a_stored_search_becomes_the_flexiffusion_row(tmp_path, searched_store):
    from conftest import copy_store

    from bench.experiments.searched import searched_plan

    with ResultStore(tmp_path / "empty.sqlite") as store:
        assert searched_plan(store, "embedded-50") is None
    source, best = searched_store
    with ResultStore(copy_store(source, tmp_path / "s.sqlite")) as store:
        plan, name = searched_plan(store, "embedded-50")
        assert name == "embedded-50-tile-s0" and plan.tokens() == best[name]
        plan, name = searched_plan(store, "embedded-41")
        assert name == "other" and plan.tokens() == best["other"]


def test_figD1_rows_name_their_restricted_searches(tmp_path, searched_store):
    """Fig. D.1: one row per search with a dimension fixed; a missing one shows the exact command that fills it,
    a stored one (by its name, not just the preset's newest) becomes the row's plan."""
    from bench.experiments.runner import Options, fill, prepared_rows
    from bench.experiments.spec import load

    spec = load("figD1")
    rows = {r.label: r for r, *_ in prepared_rows(spec, "embedded")}
    assert rows["branch fixed"].search_args == "--branches 2" and rows["branch fixed"].search == "embedded-50"
    assert {r.label: r for r, *_ in prepared_rows(spec, "ldm-4-g")}["branch fixed"].search_args == "--branches 3"
    with ResultStore(tmp_path / "s.sqlite") as store:
        cells, _ = fill(spec, store, Options(model="embedded", dry_run=False, progress=False))
        by = {c.label: c for c in cells}
        assert by["interval fixed"].status == "search"
        assert ("flexbench search --preset embedded-50 --seed 0 --intervals 2 --name figD1-fixed-interval "
                "--store FILE") in by["interval fixed"].command
    from conftest import copy_store

    from bench.experiments.searched import searched_plan

    with ResultStore(copy_store(searched_store[0], tmp_path / "searched.sqlite")) as store:
        assert searched_plan(store, "embedded-50", "figD1-fixed-interval") is None  # another search's plan is not it
    with pytest.raises(UserError, match="search_name / search_args but no 'search'"):
        from bench.experiments.spec import parse

        parse('title = "t"\nkind = "table"\npaper = "p"\nmodels = ["embedded"]\ncolumns = ["fid"]\n'
              '[[rows]]\nlabel = "x"\nmethod = "ddim"\nsearch_name = "y"\n', "t", tmp_path / "t.toml")


def test_dry_run_reads_stored_searches_and_leaves_the_store_unchanged(tmp_path, capsys, searched_store):
    """A dry run on a store that holds a search shows the searched row as planned (not "run the search") and
    writes nothing: the store's bytes are unchanged and no file is added beside it."""
    from conftest import copy_store

    path = copy_store(searched_store[0], tmp_path / "s.sqlite")
    before, files = path.read_bytes(), sorted(tmp_path.iterdir())
    assert main(["experiment", "table2", "--dry-run", "--store", str(path), "--out", str(tmp_path / "out")]) == 0
    out = capsys.readouterr().out
    assert "Flexiffusion-B: planned" in out
    assert "Flexiffusion-D: search  (flexbench search --preset embedded-33" in out  # not stored: still the command
    assert path.read_bytes() == before and sorted(tmp_path.iterdir()) == files


def test_rows_are_registry_methods_and_a_named_search_must_be_stored(tmp_path, searched_store):
    """Every row is a registry experiment (a searched row: the flexiffusion method of its preset); a search the
    caller names (Options.searches, as ``flexbench demo`` does) that is not stored is one line naming it and the
    stored ones, before anything is written."""
    from bench.experiments.runner import Options, fill, prepared_rows

    spec = load("table10")
    rows = {r.label: e for r, e in prepared_rows(spec, "embedded")}
    assert [e.method for e in rows.values()] == ["pattern", "random", "flexiffusion"]
    assert rows["handcrafted"].plan()[0].tokens()[:4] == ["f", "p3", "p3", "f"]
    assert rows["Flexiffusion (embedded-41)"].config.preset == "embedded-41"
    from conftest import copy_store

    path = copy_store(searched_store[0], tmp_path / "s.sqlite")
    with ResultStore(path) as store:
        keys = store.keys()
    before = path.read_bytes()
    with ResultStore(path) as store:
        with pytest.raises(UserError, match=r"no stored search 'embedded-41-other' .*other"):
            fill(spec, store, Options("embedded", progress=False, searches={"embedded-41": "embedded-41-other"}))
        assert store.keys() == keys
        cells, _ = fill(spec, store, Options("embedded", dry_run=True, progress=False,
                                             searches={"embedded-41": "other"}))
    assert path.read_bytes() == before
    by = {c.label: c for c in cells}
    assert by["Flexiffusion (embedded-41)"].status == "planned"
    assert by["Flexiffusion (embedded-41)"].note == "best plan of search other"
    assert by["Flexiffusion (embedded-41)"].plan == searched_store[1]["other"] and by["random"].status == "planned"
