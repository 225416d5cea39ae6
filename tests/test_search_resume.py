"""The search driver over the results store: kill -9 at several points (incl. inside a store transaction and
while writing the outputs), rerun, identical result, nothing committed evaluated twice; refusals."""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from bench.search import driver
from bench.store import ResultStore
from flexiffusion.errors import UserError

sys.path.insert(0, str(Path(__file__).parent))
from search_job import make_run  # noqa: E402

JOB = Path(__file__).parent / "search_job.py"
ENV = {**os.environ, "PYTHONPATH": os.pathsep.join([str(Path(__file__).parents[1])] +
                                                  os.environ.get("PYTHONPATH", "").split(os.pathsep))}


def _job(tmp, *extra, check=True):
    return subprocess.run([sys.executable, str(JOB), str(tmp / "s.sqlite"), str(tmp / "out"), str(tmp / "log"),
                           *extra], env=ENV, capture_output=True, text=True, timeout=300)


def _summary(folder: Path) -> dict:
    s = json.loads((folder / "summary.json").read_text())
    return {k: s[k] for k in ("best", "pareto", "population", "history", "evaluated", "key")}


def _log(tmp) -> list[str]:
    path = tmp / "log"
    return path.read_text().split() if path.exists() else []


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("ref")
    r = _job(tmp)
    assert r.returncode == 0, r.stderr
    return _summary(tmp / "out"), _log(tmp), sorted(os.listdir(tmp / "out" / "pareto"))


@pytest.mark.parametrize("kill", [["--kill-put", "1"], ["--kill-put", "9"], ["--kill-put", "33"],
                                  ["--kill-outputs"]])
def test_kill_9_then_rerun_is_identical(tmp_path, reference, kill):
    ref_summary, ref_log, ref_pareto = reference
    r = _job(tmp_path, *kill)
    assert r.returncode == -signal.SIGKILL, r.stderr
    before = _log(tmp_path)
    with ResultStore(tmp_path / "s.sqlite") as store:     # the store opens clean: no half-written result
        committed = {k.rsplit("/", 1)[1] for k in store.keys(driver.EVAL_PREFIX)}
        assert all(store.get(k) for k in store.keys())
    r = _job(tmp_path)
    assert r.returncode == 0, r.stderr
    assert _summary(tmp_path / "out") == ref_summary
    assert sorted(os.listdir(tmp_path / "out" / "pareto")) == ref_pareto
    after = _log(tmp_path)[len(before):]
    assert not committed & set(after)                      # nothing committed is evaluated again
    assert sorted(set(before) | set(after)) == sorted(set(ref_log))
    if kill[0] == "--kill-put":                            # the one killed mid-transaction is redone, once
        assert len(before) == int(kill[1]) and len(committed) == int(kill[1]) - 1
        assert len(before) + len(after) == len(ref_log) + 1


def test_external_kill_at_a_random_moment(tmp_path, reference):
    ref_summary = reference[0]
    p = subprocess.Popen([sys.executable, str(JOB), str(tmp_path / "s.sqlite"), str(tmp_path / "out"),
                          str(tmp_path / "log"), "--sleep", "0.05"], env=ENV, stdout=subprocess.DEVNULL,
                         stderr=subprocess.PIPE)
    deadline = time.time() + 120
    while len(_log(tmp_path)) < 12 and time.time() < deadline and p.poll() is None:
        time.sleep(0.02)
    p.send_signal(signal.SIGKILL)
    p.wait()
    assert 0 < len(_log(tmp_path)) < len(reference[1])
    r = _job(tmp_path)
    assert r.returncode == 0, r.stderr
    assert _summary(tmp_path / "out") == ref_summary


def test_other_seed_same_store_name_is_refused_and_nothing_written(tmp_path, reference):
    assert _job(tmp_path).returncode == 0
    before = {p.name: p.stat().st_mtime_ns for p in tmp_path.iterdir()}
    size = (tmp_path / "s.sqlite").stat().st_size
    with pytest.raises(UserError, match="holds search 'toy' with another setting.*config"):
        driver.run_search(make_run(1, tmp_path / "log2"), tmp_path / "s.sqlite", tmp_path / "out2")
    assert not (tmp_path / "out2").exists() and not (tmp_path / "log2").exists()
    assert (tmp_path / "s.sqlite").stat().st_size == size
    assert {p.name for p in tmp_path.iterdir()} == set(before)


def test_corrupted_or_foreign_store_is_refused_and_left_alone(tmp_path):
    bad = tmp_path / "bad.sqlite"
    bad.write_bytes(b"this is not a database" * 100)
    with pytest.raises(UserError, match="corrupted or not a results store"):
        driver.run_search(make_run(0, tmp_path / "log"), bad, tmp_path / "out")
    import sqlite3

    foreign = tmp_path / "foreign.sqlite"
    with sqlite3.connect(foreign) as db:
        db.execute("CREATE TABLE t (x)")
    with pytest.raises(UserError, match="corrupted or not a results store"):
        driver.run_search(make_run(0, tmp_path / "log"), foreign, tmp_path / "out")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.sqlite", "foreign.sqlite"]
    assert bad.read_bytes() == b"this is not a database" * 100


def test_budget_below_cheapest_candidate(tmp_path):
    run = make_run(0, tmp_path / "log")
    run.budget = 20.0   # cheapest: 6 segments of one full step over 32 steps = 18.75
    driver.run_search(run, tmp_path / "a.sqlite", tmp_path / "a")
    run.budget = 18.0
    with pytest.raises(UserError, match=r"below the cheapest candidate of the space \(1.875e-08 G: 6 segments of 1.1\)"):
        driver.run_search(run, tmp_path / "b.sqlite", tmp_path / "b")
    assert not (tmp_path / "b.sqlite").exists() and not (tmp_path / "b").exists()


def test_stored_rows(tmp_path):
    driver.run_search(make_run(0, tmp_path / "log"), tmp_path / "s.sqlite", tmp_path / "out")
    with ResultStore(tmp_path / "s.sqlite") as store:
        df = store.frame(experiment="search")
        keys = store.keys(driver.EVAL_PREFIX)
        result = store.get(store.keys(driver.SEARCH_PREFIX)[0])
    assert set(df.metric) >= {"fitness", "mse", "avg_macs", "nfe", "best_fitness"}
    assert len(keys) == len(set(_log(tmp_path))) == df[df.metric == "fitness"].shape[0]
    best = json.loads((tmp_path / "out" / "best.json").read_text())
    assert {r["metric"]: r["value"] for r in result}["best_fitness"] == best["fitness"]
    from flexiffusion.schedule import Plan

    assert Plan.from_dict(best).digest() == best["digest"]
