"""The main job runs end to end on the shipped embedded model (tiny search settings, few images): the four rows
(teacher, DeepCache, Flexiffusion from its short search, AutoDiffusion), the comparisons and the HTML report; a
second run reuses the store (nothing sampled for a row, nothing searched, no store row added)."""
import importlib
import json
import math
import sqlite3

import pytest
import torch

from bench.cli import main
from bench.cost.macs import PAPER, preset_table
from flexiffusion.threads import num_threads

TINY = ["--n", "12", "--search-images", "6", "--search-iterations", "1", "--search-initial", "3", "--ad-k", "4",
        "--ad-images", "6", "--ad-population", "3", "--ad-epochs", "1", "--bootstrap", "20", "--threads", "1"]


def _rows(path) -> int:
    with sqlite3.connect(path) as db:
        return db.execute("SELECT count(*) FROM rows").fetchone()[0]


@pytest.fixture(scope="module")
def first_run(tmp_path_factory):
    """One tiny demo run, with every row generation and every search evaluation counted."""
    tmp = tmp_path_factory.mktemp("demo")
    rows = importlib.import_module("bench.rows")
    driver = importlib.import_module("bench.search.driver")
    calls = {"rows": 0}
    real_generate, real_call = rows._generate, driver.StoredFitness.__call__

    def generate(*a, **k):
        calls["rows"] += 1
        return real_generate(*a, **k)

    mp = pytest.MonkeyPatch()
    mp.setattr(rows, "_generate", generate)
    fresh = {"done": 0}

    def counted_call(self, plans):
        before = self.done
        out = real_call(self, plans)
        fresh["done"] += self.done - before
        return out

    mp.setattr(driver.StoredFitness, "__call__", counted_call)
    args = ["demo", *TINY, "--cache-dir", str(tmp / "cache"), "--store", str(tmp / "store.sqlite")]
    with num_threads(2):
        rc = main(args + ["--out", str(tmp / "a.json"), "--report", str(tmp / "r1")])
        threads_after = torch.get_num_threads()
    first = {"rc": rc, "rows": calls["rows"], "search": fresh["done"], "store_rows": _rows(tmp / "store.sqlite"),
             "threads_after": threads_after}
    yield tmp, args, first, calls, fresh
    mp.undo()


def test_demo_measures_the_four_rows_and_writes_the_report(first_run):
    tmp, _, first, _, _ = first_run
    assert first["rc"] == 0 and first["threads_after"] == 2       # --threads is scoped to the job
    assert first["rows"] == 4 and first["search"] >= 3             # teacher sampled once (row = rFID reference)
    result = json.loads((tmp / "a.json").read_text())
    rows = {r["label"]: r for r in result["rows"]}
    assert list(rows) == ["teacher (DDIM 100)", "DeepCache N=5 b=3", "Flexiffusion", "AutoDiffusion K=4"]
    for label, row in rows.items():
        assert row["status"] == "measured" and row["nfe"] > 0
        for key in ("avg_macs_paper_g", "speedup_paper", "latency_s_per_image", "fid", "rfid", "isc",
                    "precision", "recall", "fid_low", "fid_high", "rfid_low", "rfid_high"):
            assert math.isfinite(row[key]), (label, key)
    teacher, dc, flex, ad = rows.values()
    # MACs from the table by hand: 100 steps, full at every 5th, partial(3) in between.
    table = preset_table("embedded")
    full, partial = table.unet_macs("full", None, PAPER), table.unet_macs("partial", 3, PAPER)
    assert teacher["nfe"] == 100 and teacher["speedup_paper"] == 1.0
    assert dc["avg_macs_paper_g"] == pytest.approx((20 * full + 80 * partial) / 100 / 1e9, rel=1e-9)
    assert flex["avg_macs_paper_g"] <= 0.5 * full / 1e9 + 1e-12   # the preset's budget: half the teacher
    assert ad["nfe"] == 4
    assert abs(teacher["rfid"]) < 1e-3 < dc["rfid"]               # the teacher against itself is 0
    assert [c.split(":")[0] for c in result["comparisons"]] == ["Flexiffusion vs DeepCache N=5 b=3",
                                                                "DeepCache N=5 b=3 vs teacher (DDIM 100)"]
    assert all("significant" in c for c in result["comparisons"])
    page = (tmp / "r1" / "index.html").read_text()
    assert "AutoDiffusion K=4" in page and "Flexiffusion" in page and "<details><summary>provenance</summary>" in page
    assert "paired bootstrap" in page and "**" not in page                # markdown bold rendered as HTML
    assert "<b>not significant</b>" in page or "<b>significant</b>" in page
    assert "reference (0 by definition)" in page                   # the teacher's rFID: the reference itself
    assert "paired FID differences against teacher (DDIM 100)" in page
    imgs = sorted(p.name for p in (tmp / "r1" / "img").glob("*.png"))
    # samples, 2 Pareto plots, the forest plot of paired differences, schedule strips
    assert page.count("<img src=") == len(imgs) == 5
    assert [any(k in n for n in imgs) for k in ("samples", "schedules", "paired_fid")] == [True] * 3


def test_demo_second_run_reuses_the_store(first_run, capsys):
    """Nothing searched again (0 new evaluations), no row generated again (only the grid's 8 images per row are
    sampled), no store row added, the same numbers."""
    tmp, args, first, calls, fresh = first_run
    before = (calls["rows"], fresh["done"])
    capsys.readouterr()
    assert main(args + ["--out", str(tmp / "b.json"), "--report", str(tmp / "r2")]) == 0
    assert (calls["rows"], fresh["done"]) == before
    assert _rows(tmp / "store.sqlite") == first["store_rows"]
    out = capsys.readouterr().out
    assert "evaluations: 0 new" in out and out.count(": reused") == 4
    a, b = (json.loads((tmp / f).read_text()) for f in ("a.json", "b.json"))
    for ra, rb in zip(a["rows"], b["rows"]):
        assert ra.pop("status") == "measured" and rb.pop("status") == "reused"
        assert ra == rb
    assert a["comparisons"] == b["comparisons"]
    assert (tmp / "r2" / "index.html").is_file()


def test_demo_bad_branch(capsys, tmp_path):
    assert main(["demo", "--branch", "42", "--n", "12", "--store", str(tmp_path / "s.sqlite")]) == 2
    assert "branch 42 out of range" in capsys.readouterr().err
    assert not (tmp_path / "s.sqlite").exists()                    # nothing written


@pytest.mark.parametrize("flag, value, message", [("--threads", "0", "--threads 0"), ("--n", "4", "--n 4"),
                                                  ("--ad-k", "0", "--ad-k 0"), ("--bootstrap", "1", "--bootstrap 1")])
def test_demo_bad_numbers(capsys, flag, value, message):
    assert main(["demo", flag, value]) == 2
    assert message in capsys.readouterr().err
