"""Tables 4, 9 and 5 rendered from what the real writers store: ``flexbench ablation`` and ``flexbench search`` fill
the store at tiny sizes (3 candidates, 4 and 8 images; 2 + 2 candidates of 8 images), then ``flexbench experiment``
renders.  Before any writer ran, every cell names the command that fills it.  No row is written by hand."""
import contextlib
import io
import re
import sqlite3

import pytest

from bench.cli import main, parse_invocation
from bench.experiments.spec import load

SEARCH = ["--images", "8", "--iterations", "1", "--initial", "2", "--children", "2", "--parents", "2", "--threads", "1",
          "--batch-size", "8"]


def _run(argv) -> str:
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert main(argv) == 0
    return out.getvalue()


def _table(md: str) -> dict[str, dict[str, str]]:
    """label -> {header: cell} of a rendered table.md."""
    lines = [line for line in md.splitlines() if line.startswith("|")]
    heads = [c.strip() for c in lines[0].strip("|").split("|")][1:]
    return {cells[0]: dict(zip(heads, cells[1:]))
            for cells in ([c.strip() for c in line.strip("|").split("|")] for line in lines[2:])}


def _render(name, store, out) -> tuple[dict, str]:
    _run(["experiment", name, "--store", str(store), "--out", str(out), "--quiet"])
    return _table((out / name / "table.md").read_text()), (out / name / "table.md").read_text()


@pytest.fixture(scope="module")
def filled(tmp_path_factory):
    """One store: the tables before any writer, then after the ablation, then after two searches."""
    tmp = tmp_path_factory.mktemp("writers")
    store, cache = tmp / "s.sqlite", str(tmp / "cache")
    got = {"store": store, "tmp": tmp}
    got["before"] = {name: _render(name, store, tmp / "before") for name in ("table4", "table9", "table5")}
    got["dry"] = _run(["experiment", "table4", "--dry-run", "--store", str(store)])
    ablation = ["ablation", "--preset", "embedded-50", "--candidates", "3", "--k", "4,8", "--threads", "1",
                "--batch-size", "8", "--store", str(store), "--out", str(tmp / "abl"), "--cache-dir", cache]
    got["ablation"] = _run(ablation)
    got["ablation_again"] = _run(ablation)   # everything from the store
    got["after_ablation"] = {name: _render(name, store, tmp / "abl-tables") for name in ("table4", "table9")}
    got["searches"] = {preset: _run(["search", "--preset", preset, *SEARCH, "--store", str(store), "--cache-dir",
                                     cache, "--out", str(tmp / preset)]) for preset in ("embedded-41", "embedded-33")}
    got["table5"] = _render("table5", store, tmp / "search-tables")
    return got


def _printed(text: str) -> dict[tuple[str, int], list[str]]:
    """(metric, k) -> [tau, p, s/candidate] as the ablation printed them."""
    lines = text.splitlines()
    head = next(i for i, line in enumerate(lines) if line.split()[:2] == ["metric", "k"])
    out = {}
    for line in lines[head + 1:]:
        words = line.split()
        if len(words) != 6 or words[0] not in ("rfid", "fid", "mse"):
            break
        out[(words[0], int(words[1]))] = words[2:5]
    return out


def _same(a: str, b: str) -> bool:
    """The same number (markdown drops trailing zeros: 1.30 -> 1.3), or both 'n/a'."""
    return a == b or (a not in ("", "n/a") and b not in ("", "n/a") and float(a) == float(b))


def test_before_any_writer_every_cell_names_the_command_that_fills_it(filled):
    for name, (table, md) in filled["before"].items():
        spec = load(name)
        writer = spec.filled_by.split()[1]
        assert list(table) == ["(no rows yet)"]
        cells = [v for k, v in table["(no rows yet)"].items() if k != "src"]
        assert len(cells) == len(spec.columns) and all(c == f"not yet filled: flexbench {writer} [1]" for c in cells)
        assert f"[1] fills it: `{spec.filled_by}`" in md
        assert parse_invocation(spec.filled_by.split()[1:]) == ""   # a real flexbench invocation
    assert f"(no rows yet): elsewhere  ({load('table4').filled_by})" in filled["dry"]


def test_table4_one_row_per_metric_and_k_with_the_printed_values(filled):
    printed = _printed(filled["ablation"])
    assert sorted(printed) == [(m, k) for m in ("fid", "mse", "rfid") for k in (4, 8)]
    noise = re.search(r"its own noise: tau (\S+)", filled["ablation"]).group(1)
    table, _ = filled["after_ablation"]["table4"]
    names = {"rfid": "rFID", "fid": "FID", "mse": "MSE"}
    assert list(table) == [f"{names[m]}-{k}" for m in ("rfid", "fid", "mse") for k in (4, 8)]
    for (m, k), (tau, p, s) in printed.items():
        row = table[f"{names[m]}-{k}"]
        assert row["images"] == str(k)
        assert _same(row["Kendall's tau"], tau) and _same(row["p-value"], p) and _same(row["s/candidate"], s)
        assert _same(row["reference halves' tau"], noise)
    # the second run read everything back and stored nothing new: the same table
    assert "evaluations: 0 new, 3 read from the store" in filled["ablation_again"]
    assert _printed(filled["ablation_again"]) == printed
    # tau differs between metrics in the ablation's own output, so the table cannot show one tau everywhere
    assert len({tuple(v) for v in printed.values()}) > 1


def test_table9_one_row_per_k_of_rfid(filled):
    printed = _printed(filled["ablation"])
    table, _ = filled["after_ablation"]["table9"]
    assert list(table) == ["rFID-4", "rFID-8"]
    for k in (4, 8):
        tau, p, s = printed[("rfid", k)]
        row = table[f"rFID-{k}"]
        assert row["images"] == str(k) and _same(row["Kendall's tau"], tau) and _same(row["p-value"], p)
        assert _same(row["s/candidate"], s)


def test_table5_one_row_per_stored_search_with_numbers(filled):
    table, md = filled["table5"]
    assert list(table) == ["embedded-41-tile-s0", "embedded-33-tile-s0"]
    for preset, text in filled["searches"].items():
        row = table[f"{preset}-tile-s0"]
        budget = re.search(r"budget (\S+) G avg MACs", text).group(1)
        distinct = re.search(r"; (\d+) distinct;", text).group(1)
        assert row["model"] == "embedded" and row["resolution"] == "16" and _same(row["budget (G)"], budget)
        assert row["evaluations"] == "4" and row["distinct evaluations"] == distinct   # 2 initial + 1 x 2 children
        assert float(row["wall time (s)"]) >= 0 and float(row["device hours"]) > 0
        assert row["device"] == "cpu" and row["threads"] == "1"   # what the search ran with (--threads 1)
    assert "not stored" not in md and "not yet filled" not in md


def test_bad_stores_are_one_error_line_exit_2(tmp_path, capsys):
    from bench.store import ResultStore

    bad = tmp_path / "bad.sqlite"
    bad.write_bytes(b"not a database" * 200)
    newer = tmp_path / "newer.sqlite"
    ResultStore(newer).close()
    with sqlite3.connect(newer) as db:
        db.execute("UPDATE meta SET value='99' WHERE name='schema_version'")
    for path, word in ((bad, "corrupted"), (newer, "newer")):
        before = path.read_bytes()
        assert main(["experiment", "table4", "--store", str(path), "--out", str(tmp_path / "out")]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("error:") and word in err[0]
        assert path.read_bytes() == before
    # a store of an older schema is migrated, then rendered (no ablation rows in it yet)
    older = tmp_path / "older.sqlite"
    ResultStore(older, migrate_to=1).close()
    assert main(["experiment", "table4", "--store", str(older), "--out", str(tmp_path / "out"), "--quiet"]) == 0
    assert "not yet filled: flexbench ablation [1]" in (tmp_path / "out" / "table4" / "table.md").read_text()
