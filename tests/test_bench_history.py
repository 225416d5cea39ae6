"""The benchmark history (bench/history.py, ``bench-compare --history``, ``flexbench bench-history``): runs append,
a corrupted line is skipped with a warning naming it, the trend page and the pull-request summary render."""
import copy
import json

import pytest

from bench import history
from bench.cli import main
from flexiffusion.errors import UserError

BASE = {"benchmarks": [{"name": "test_engine", "stats": {"mean": 0.5}, "extra_info": {"tracked": {
    "ratio:engine_overhead": {"value": 1.10, "better": "lower", "threshold": 0.25},
    "ratio:plan_speedup": {"value": 2.0, "better": "higher", "threshold": 0.25},
    "quality:rfid_n3": {"value": 3.93, "tolerance": 0.05},
    "exact:macs": {"value": {"full": 95012864}}}}}]}


def _files(tmp_path, overhead):
    cur = copy.deepcopy(BASE)
    cur["benchmarks"][0]["extra_info"]["tracked"]["ratio:engine_overhead"]["value"] = overhead
    (tmp_path / "b.json").write_text(json.dumps(BASE))
    (tmp_path / "c.json").write_text(json.dumps(cur))
    return str(tmp_path / "b.json"), str(tmp_path / "c.json")


def test_history_appends_runs_and_renders(tmp_path, capsys):
    hist = tmp_path / "h.jsonl"
    for i, overhead in enumerate([1.10, 1.12, 1.60]):
        b, c = _files(tmp_path, overhead)
        rc = main(["bench-compare", b, c, "--history", str(hist), "--commit", f"c0ffee{i}"])
        assert rc == (1 if overhead > 1.10 * 1.25 else 0)
    lines = history.read(hist)
    assert [line["commit"] for line in lines] == ["c0ffee0", "c0ffee1", "c0ffee2"]
    last = lines[-1]["figures"]
    assert last["test_engine::ratio:engine_overhead"]["status"] == "regression"
    assert last["test_engine::ratio:engine_overhead"]["band"] == pytest.approx([1.10, 1.375])
    assert last["test_engine::ratio:plan_speedup"]["band"] == pytest.approx([1.5, 2.0])
    assert last["test_engine::exact:macs"] == {"value": None, "exact": True, "status": "ok"}
    capsys.readouterr()
    assert main(["bench-history", "--history", str(hist), "--out", str(tmp_path / "site"),
                 "--markdown", str(tmp_path / "comment.md")]) == 0
    md = (tmp_path / "comment.md").read_text()
    assert "1 regression(s)" in md and "**REGRESSION**" in md and "c0ffee2" in md
    assert md.index("engine_overhead") < md.index("plan_speedup")  # regressions first
    assert "1.12" in md  # the previous run's value
    page = (tmp_path / "site" / "index.html").read_text()
    pngs = sorted((tmp_path / "site").glob("figure-*.png"))
    assert len(pngs) == 3 and all(p.name in page for p in pngs)  # 2 ratios + 1 quality figure; exact is a table row


def test_corrupted_line_is_skipped_with_its_number(tmp_path, capsys):
    hist = tmp_path / "h.jsonl"
    good = history.entry("bench-compare", {"x::ratio:a": {"value": 1.0, "band": [1, 1.2], "status": "ok"}}, "abc")
    hist.write_text(json.dumps(good) + "\n{truncated\n" + json.dumps({"no": "figures"}) + "\n" + json.dumps(good) + "\n")
    with pytest.warns(UserWarning) as caught:
        lines = history.read(hist)
    assert len(lines) == 2
    assert [str(w.message).split(" skipped")[0] for w in caught] == [f"{hist} line 2", f"{hist} line 3"]
    assert main(["bench-history", "--history", str(hist), "--out", str(tmp_path / "site")]) == 0
    out = capsys.readouterr().out
    assert "line 2 skipped" in out and "line 3 skipped" in out and "2 runs" in out


def test_track_results_enter_the_history():
    result = {"rows": [{"figure": "ratio:p", "worse_by": 0.2, "threshold": 0.08, "suspect": True},
                       {"figure": "ratio:q", "worse_by": 0.01, "threshold": 0.05, "suspect": False}],
              "regressions": ["ratio:p"]}
    figs = history.from_track(result)
    assert figs["A/B ratio:p"]["value"] == pytest.approx(20) and figs["A/B ratio:p"]["status"] == "regression"
    assert figs["A/B ratio:q"]["band"] == pytest.approx([-5, 5]) and figs["A/B ratio:q"]["status"] == "ok"


def test_bad_inputs_are_one_line_exit_2(tmp_path, capsys):
    assert main(["bench-history", "--history", str(tmp_path / "none.jsonl"), "--out", str(tmp_path / "o")]) == 2
    assert "no benchmark history" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()
    other = {"benchmarks": [{"name": "test_x", "stats": {"mean": 1.0}, "extra_info": {}}]}  # another suite's JSON
    (tmp_path / "other.json").write_text(json.dumps(other))
    b, _ = _files(tmp_path, 1.1)
    assert main(["bench-compare", b, str(tmp_path / "other.json")]) == 2
    err = capsys.readouterr().err
    assert "not a benchmark file of this suite" in err and len(err.strip().splitlines()) == 1
    with pytest.raises(UserError):
        history.read(tmp_path / "missing")


def test_workflow_tracks_gates_and_comments():
    """The CI workflow runs the compare, the A/B gate and the history, and every flexbench call in it parses."""
    import re
    import shlex
    from pathlib import Path

    from bench.cli import parse_invocation

    wf = (Path(__file__).resolve().parents[1] / ".github" / "workflows" / "bench.yml").read_text()
    calls = [line.strip().removeprefix("run:").strip() for line in wf.splitlines() if "flexbench " in line
             and not line.strip().startswith("#")]
    words = {c.split()[1] for c in calls}
    assert {"bench-compare", "bench-track", "bench-history"} <= words
    for call in calls:
        call = re.sub(r"\$\{\{[^}]*\}\}|\"\$[A-Z_]+\"|\$[A-Z_]+", "X", call)
        assert parse_invocation(shlex.split(call)[1:]) == "", call
    assert "--history" in wf and "gh pr comment" in wf and "GITHUB_STEP_SUMMARY" in wf
