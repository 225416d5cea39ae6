"""bench-compare (bench/tracking.py) on synthetic pytest-benchmark JSON: an unchanged run passes, an injected
slowdown, quality drop or exact change fails."""
import copy
import json

import pytest

from bench.cli import main

BASE = {"benchmarks": [{"name": "test_engine", "stats": {"mean": 0.5}, "extra_info": {"tracked": {
    "ratio:engine_overhead": {"value": 1.10, "better": "lower", "threshold": 0.25},
    "ratio:plan_speedup": {"value": 2.0, "better": "higher", "threshold": 0.25},
    "quality:rfid_deepcache_n3": {"value": 3.93, "tolerance": 0.05},
    "exact:macs": {"value": {"full": 95012864, "partial-b1": 7938048}}}}}]}


def _run(tmp_path, current, capsys):
    (tmp_path / "b.json").write_text(json.dumps(BASE))
    (tmp_path / "c.json").write_text(json.dumps(current))
    rc = main(["bench-compare", str(tmp_path / "b.json"), str(tmp_path / "c.json")])
    return rc, capsys.readouterr().out


def _with(path, value):
    cur = copy.deepcopy(BASE)
    cur["benchmarks"][0]["extra_info"]["tracked"][path]["value"] = value
    cur["benchmarks"][0]["stats"]["mean"] = 99.0  # absolute times are never compared
    return cur


def test_unchanged_run_passes(tmp_path, capsys):
    rc, out = _run(tmp_path, _with("ratio:engine_overhead", 1.2), capsys)  # +9 %: inside the threshold
    assert rc == 0 and "0 regression(s)" in out


@pytest.mark.parametrize("name, value, word", [
    ("ratio:engine_overhead", 1.5, "worse"),           # injected slowdown of the engine
    ("ratio:plan_speedup", 1.4, "worse"),              # speed-up lost
    ("quality:rfid_deepcache_n3", 4.2, "tolerance"),   # injected quality drop
    ("exact:macs", {"full": 95012865, "partial-b1": 7938048}, "+ \"full\": 95012865")])
def test_regression_fails(tmp_path, capsys, name, value, word):
    rc, out = _run(tmp_path, _with(name, value), capsys)
    assert rc == 1 and name in out and word in out and "1 regression(s)" in out


def test_missing_figure_fails_and_bad_file_is_exit_2(tmp_path, capsys):
    cur = copy.deepcopy(BASE)
    del cur["benchmarks"][0]["extra_info"]["tracked"]["exact:macs"]
    rc, out = _run(tmp_path, cur, capsys)
    assert rc == 1 and "missing" in out
    (tmp_path / "bad.json").write_text("{not json")
    assert main(["bench-compare", str(tmp_path / "b.json"), str(tmp_path / "bad.json")]) == 2
    assert "pytest-benchmark JSON" in capsys.readouterr().err
