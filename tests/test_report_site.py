"""``flexbench report``: one HTML site of everything a results store holds, rendered from what the real writers
stored (``flexbench experiment`` on two tiny specs, ``flexbench search`` twice, ``flexbench ablation``): an index,
a page per experiment / search / ablation, every image present, markdown rendered, axes in words, the teacher's rFID
as the reference, schedule strips at their timesteps, paired differences against a reference row; bad input (no
store, an empty store, an unknown reference) is one line and exit 2."""
from __future__ import annotations

import re
from pathlib import Path

import pytest

from bench.cli import main
from bench.results import METRICS

# two tiny experiments on the embedded model: a 10-step teacher (rFID's reference) so rows cost little
TINY_A = '''
title = "tiny A: teacher, DeepCache, DDIM 5"
kind = "table"
paper = "a tiny Pareto table"
models = ["embedded"]
columns = ["nfe", "avg_macs_paper_g", "speedup_paper", "fid", "rfid", "isc"]
images = 10
teacher_steps = 10
plot = "pareto"
compare = [["DeepCache", "teacher"]]
[[rows]]
label = "teacher"
method = "teacher"
config = {steps = 10}
[[rows]]
label = "DeepCache"
method = "deepcache"
config = {steps = 10, interval = 2, branch = 1}
[[rows]]
label = "DDIM 5"
method = "ddim"
config = {steps = 5}
'''
TINY_B = '''
title = "tiny B: schedules"
kind = "figure"
paper = "a tiny schedule figure"
models = ["embedded"]
columns = ["nfe", "fid"]
images = 10
teacher_steps = 10
plot = "schedules"
[[rows]]
label = "DDIM 5"
method = "ddim"
config = {steps = 5}
[[rows]]
label = "DPM-Solver-2 4"
method = "dpm-multistep"
config = {steps = 4, order = 2}
'''


@pytest.fixture(scope="module")
def filled(tmp_path_factory, searched_store):
    """A store the real writers filled: two tiny searches (conftest's, shared with other modules), two tiny
    experiments, one tiny ablation (about 35 s on an idle 2-core host besides the searches)."""
    from conftest import copy_store

    from bench.experiments import spec

    tmp = tmp_path_factory.mktemp("site")
    specs = tmp / "specs"
    specs.mkdir()
    (specs / "tinya.toml").write_text(TINY_A)
    (specs / "tinyb.toml").write_text(TINY_B)
    store = copy_store(searched_store[0], tmp / "store.sqlite")
    mp = pytest.MonkeyPatch()
    mp.setattr(spec, "SPEC_DIR", specs)
    mp.setenv("FLEXBENCH_CACHE", str(tmp / "cache"))
    for name in ("tinya", "tinyb"):
        assert main(["experiment", name, "--bootstrap", "5", "--store", str(store), "--out", str(tmp / "exp"),
                     "--quiet"]) == 0
    assert main(["ablation", "--preset", "embedded-50", "--candidates", "3", "--k", "4,8", "--threads", "1",
                 "--batch-size", "8", "--store", str(store), "--out", str(tmp / "abl")]) == 0
    yield tmp, store
    mp.undo()


def _pages(folder: Path) -> dict[str, str]:
    return {p.name: p.read_text() for p in sorted(folder.glob("*.html"))}


def _table(page: str, title: str) -> str:
    """The table under the heading that starts with ``title``."""
    return re.search(rf"<h2>{re.escape(title)}[^<]*</h2>\s*<div class=\"wide\"><table>(.*?)</table>", page,
                     re.S).group(1)


def _cells(page: str, row: str) -> list[str]:
    """The cells of the first table row whose first cell is ``row``."""
    for tr in re.findall(r"<tr>(.*?)</tr>", page):
        cells = [re.sub(r"<[^>]+>", "", c) for c in re.findall(r"<td[^>]*>(.*?)</td>", tr)]
        if cells and cells[0] == row:
            return cells
    raise AssertionError(f"no row {row!r}")


def _header(page: str) -> list[str]:
    return re.findall(r"<th>(.*?)</th>", re.search(r"<table><tr>(.*?)</tr>", page).group(1))


@pytest.fixture(scope="module")
def site(filled):
    from reports import figures

    tmp, store = filled
    labels = []
    real_save = figures._save

    def save(fig, path):   # every axis label of every figure the report draws
        labels.extend(t for ax in fig.axes for t in (ax.get_xlabel(), ax.get_ylabel()) if t)
        return real_save(fig, path)

    mp = pytest.MonkeyPatch()
    mp.setattr(figures, "_save", save)
    mp.setenv("FLEXBENCH_CACHE", str(tmp / "cache"))
    rc = main(["report", "--store", str(store), "--out", str(tmp / "site")])
    mp.undo()
    return tmp / "site", rc, labels


def test_every_experiment_search_and_ablation_gets_a_page(site):
    out, rc, _ = site
    assert rc == 0
    pages = _pages(out)
    assert {"index.html", "experiment-tinya-embedded.html", "experiment-tinyb-embedded.html",
            "search-embedded-50-tile-s0.html", "search-other.html", "ablation-1.html"} <= set(pages)
    index = pages["index.html"]
    assert all(f'href="{name}"' in index for name in pages if name != "index.html")
    for name, text in pages.items():
        assert "**" not in text, name                            # markdown rendered, never literal
        assert "<script" not in text and "http" not in text, name   # self-contained
        srcs = re.findall(r'<img src="([^"]+)"', text)
        assert all((out / s).is_file() and not s.startswith("/") for s in srcs), name
        if name != "index.html":
            assert 'href="index.html"' in text, name
    assert "<b>significant</b>" in pages["experiment-tinya-embedded.html"] or \
        "<b>not significant</b>" in pages["experiment-tinya-embedded.html"]
    # the store's results accounted for: the searches' evaluations and the ablation's candidates are shown
    kinds = {c[0]: c for c in (_cells(index, k) for k in ("flexiffusion-eval", "ablation", "row"))}
    assert all(c[1] == c[2] for c in kinds.values()), kinds


def test_the_teacher_rfid_is_the_reference_and_intervals_stay_above_zero(site):
    out, _, _ = site
    page = (out / "experiment-tinya-embedded.html").read_text()
    head = _header(page)
    teacher, deepcache = _cells(page, "teacher"), _cells(page, "DeepCache")
    assert teacher[head.index("rFID")] == "reference (0 by definition)"
    assert re.fullmatch(r"\d+\.\d\d \[\d+\.\d\d†?, \d+\.\d\d\]", deepcache[head.index("rFID")])
    for row in ("teacher", "DeepCache", "DDIM 5"):
        for cell in _cells(page, row):
            assert not re.search(r"\[-", cell), (row, cell)        # FID / rFID never below 0
    if "†" in page:
        assert "clipped at the metric" in page


def test_axes_are_labelled_in_words(site):
    _, _, labels = site
    assert labels
    raw = [t for t in labels if t in METRICS or re.search(r"\w_\w", t)]
    assert raw == [], raw
    assert any("avg MACs (G)" in t for t in labels) and any(t.startswith("FID") for t in labels)


def test_paired_differences_against_the_teacher_beside_the_pareto_plot(site):
    out, _, _ = site
    page = (out / "experiment-tinya-embedded.html").read_text()
    assert "paired FID differences against teacher" in page
    assert re.search(r'<div class="row"><figure><img src="[^"]*pareto_fid.png".*?<img src="[^"]*paired_fid.png"',
                     page)
    paired = _table(page, "paired FID differences against teacher")
    diffs = {r: _cells(paired, r) for r in ("DeepCache", "DDIM 5")}
    rows = [re.sub(r"<[^>]+>", "", c) for c in re.findall(r"<tr><td[^>]*>(.*?)</td>", paired)]
    assert rows == ["DeepCache", "DDIM 5"] and all(c[3] in ("significant", "not significant") for c in diffs.values())
    assert all(re.fullmatch(r"\[[-+]\d+\.\d\d, [-+]\d+\.\d\d\]", c[2]) for c in diffs.values())


def test_a_named_reference(filled, tmp_path, monkeypatch):
    tmp, store = filled
    monkeypatch.setenv("FLEXBENCH_CACHE", str(tmp / "cache"))
    assert main(["report", "--store", str(store), "--out", str(tmp_path / "s"), "--reference", "DDIM 5"]) == 0
    page = (tmp_path / "s" / "experiment-tinya-embedded.html").read_text()
    paired = _table(page, "paired FID differences against DDIM 5")
    assert re.fullmatch(r"[-+]\d+\.\d\d", _cells(paired, "teacher")[1]) and "DDIM 5" not in _cells(paired, "DeepCache")[0]


def test_strips_place_each_step_at_its_timestep(filled):
    from bench.experiments.record import latest_records
    from bench.store import ResultStore
    from reports.figures import timestep_positions

    base = [900, 800, 700, 600, 500, 400, 300, 200, 100, 0]
    assert timestep_positions([800, 600, 400, 200, 0], base) == [1, 3, 5, 7, 9]
    assert timestep_positions([850, 0], base) == [0.5, 9]
    assert timestep_positions([999, 950, -50], base) == pytest.approx([-0.99, -0.5, 9.5])
    _, store = filled
    with ResultStore(store) as s:
        cells = {c.label: c for r in latest_records(s) if r.spec.name == "tinyb" for c in r.cells}
    ddim, dpm = cells["DDIM 5"], cells["DPM-Solver-2 4"]
    assert len(ddim.base_grid) == 10 and ddim.base_grid[0] > ddim.base_grid[-1]   # the teacher's 10 steps
    assert len(ddim.timesteps) == 5 and set(ddim.timesteps) <= set(ddim.base_grid)
    # 5 of the 10 timesteps: drawn across the whole strip, not at positions 0-4
    assert max(timestep_positions(ddim.timesteps, ddim.base_grid)) >= 8
    assert len(dpm.timesteps) == 4 and max(timestep_positions(dpm.timesteps, dpm.base_grid)) > 6


def test_an_empty_store_says_so_on_its_page_and_in_one_line(tmp_path, capsys):
    from bench.store import ResultStore

    ResultStore(tmp_path / "empty.sqlite").close()
    assert main(["report", "--store", str(tmp_path / "empty.sqlite"), "--out", str(tmp_path / "site")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: results store") and "holds no results" in err[0]
    assert "holds no results" in (tmp_path / "site" / "index.html").read_text()


@pytest.mark.parametrize("problem", ["missing store", "unknown reference", "not a store"])
def test_bad_input_is_one_line_and_writes_nothing(filled, tmp_path, capsys, problem):
    _, store = filled
    args = {"missing store": ["--store", str(tmp_path / "nope.sqlite")],
            "unknown reference": ["--store", str(store), "--reference", "no such row"],
            "not a store": ["--store", str(tmp_path / "text.sqlite")]}[problem]
    (tmp_path / "text.sqlite").write_text("not sqlite")
    assert main(["report", *args, "--out", str(tmp_path / "site")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: "), err
    assert not (tmp_path / "site").exists() and not (tmp_path / "nope.sqlite").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["text.sqlite"]   # no temporary folder left behind


@pytest.mark.skipif(__import__("shutil").which("chromium") is None, reason="headless Chromium absent (Debian "
                                                                           "package `chromium`; .ci/run installs it)")
def test_every_page_opens_in_headless_chromium(site, tmp_path):
    from test_report_html import _chromium_check

    out, _, _ = site
    for page in sorted(out.glob("*.html")):
        assert _chromium_check(page, tmp_path) == [], page.name
