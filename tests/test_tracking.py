"""bench-compare (bench/tracking.py) on synthetic pytest-benchmark JSON: an unchanged run passes, an injected
slowdown, quality drop or exact change fails; and the same on copies of the stored baseline."""
import copy
import json
from pathlib import Path

import pytest

from bench.cli import main
from bench.tracking import tracked

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


# ---- the stored baseline (benchmarks/expected/baseline.json: a real run of the exact, ratio and quality cases) ----
# Copies of it with modified figures go through bench-compare; no benchmark is re-run here.
STORED = Path(__file__).resolve().parents[1] / "benchmarks" / "expected" / "baseline.json"


def _stored_copy(tmp_path, edit=None):
    data = json.loads(STORED.read_text())
    for b in data["benchmarks"]:
        b["stats"]["mean"] *= 50  # absolute times are never compared
        if edit:
            edit(b["name"], b["extra_info"].get("tracked") or {})
    path = tmp_path / "current.json"
    path.write_text(json.dumps(data))
    return path


def _compare_stored(path, capsys):
    rc = main(["bench-compare", str(STORED), str(path)])
    return rc, capsys.readouterr().out


def test_stored_baseline_has_every_kind_and_passes_against_itself(tmp_path, capsys):
    entries = tracked(STORED)
    kinds = {key.split("::", 1)[1].split(":", 1)[0] for key in entries}
    assert kinds == {"exact", "ratio", "quality"}
    quality = {k: e for k, e in entries.items() if "::quality:" in k}
    assert len(quality) == 3 and all(e["tolerance"] > 0 for e in quality.values())
    for key, e in entries.items():
        if "::ratio:" in key:  # relative: a halved speed-up or a ratio more than doubled always fails
            assert e["better"] in ("lower", "higher") and e["threshold"] > 0
            assert e["threshold"] <= 1.0 if e["better"] == "lower" else e["threshold"] < 0.5
    rc, out = _compare_stored(_stored_copy(tmp_path), capsys)
    assert rc == 0 and f"{len(entries)} tracked figures compared: 0 regression(s)" in out


def test_stored_baseline_exact_entries_are_the_expected_figures():
    expected = json.loads((STORED.parent / "exact.json").read_text())
    exact = {k.split("::exact:", 1)[1]: e["value"] for k, e in tracked(STORED).items() if "::exact:" in k}
    assert exact == expected  # the baseline is not stale against benchmarks/expected/exact.json


@pytest.mark.parametrize("factor, rc_expected", [(0.5, 0), (2.0, 1)])
def test_stored_baseline_quality_drop(tmp_path, capsys, factor, rc_expected):
    def worse(_, figures):
        for name, e in figures.items():
            if name == "quality:rfid_uniform-N5-b3":
                e["value"] += factor * e["tolerance"]  # half a tolerance: noise; two tolerances: a regression

    rc, out = _compare_stored(_stored_copy(tmp_path, worse), capsys)
    assert rc == rc_expected and f"{rc_expected} regression(s)" in out
    if rc_expected:
        assert "REGRESSION test_quality_figures::quality:rfid_uniform-N5-b3" in out and "tolerance" in out


def test_stored_baseline_missing_quality_entry_and_injected_slowdown_fail(tmp_path, capsys):
    rc, out = _compare_stored(_stored_copy(tmp_path, lambda _, f: f.pop("quality:rfid_skip-every-2nd", None)), capsys)
    assert rc == 1 and "quality:rfid_skip-every-2nd: missing from the current run" in out

    def slower(_, figures):
        if "ratio:engine_overhead_factor" in figures:
            e = figures["ratio:engine_overhead_factor"]
            e["value"] *= 1 + 2 * e["threshold"]

    rc, out = _compare_stored(_stored_copy(tmp_path, slower), capsys)
    assert rc == 1 and "ratio:engine_overhead_factor" in out and "1 regression(s)" in out
