"""The same-host A/B ratio gate (bench/track.py) without running the benchmark: the statistic, the confirmation rule,
the alternating order, the reference worktree, the stored gates; and the injected slowdown (benchmarks/inject.py)."""
import json
import subprocess
from pathlib import Path

import pytest

from bench import track
from bench.cli import main
from flexiffusion.errors import UserError

ROOT = Path(__file__).resolve().parents[1]


def test_worse_by_direction():
    assert track.worse_by([1.0, 1.0], [1.1, 1.1], "lower") == pytest.approx(0.1)
    assert track.worse_by([2.0, 2.0], [1.8, 1.8], "higher") == pytest.approx(0.1)
    assert track.worse_by([2.0], [2.2], "higher") < 0  # faster is never a regression


def _fake_runs(monkeypatch, values):
    """run_benchmark replaced: values[side] is a list of dicts consumed in call order; calls are logged."""
    calls = []

    def fake(tree, out, inject, benchmark=track.BENCHMARK):
        side = "current" if str(tree) == "cur" else "reference"
        calls.append((side, inject))
        v = values[side].pop(0)
        return {k: {"value": x, "better": "lower"} for k, x in v.items()}

    monkeypatch.setattr(track, "run_benchmark", fake)
    return calls


def test_measure_alternates_and_injects_only_the_current_tree(monkeypatch, tmp_path):
    vals = {"reference": [{"ratio:a": 1.0}] * 4, "current": [{"ratio:a": 1.0}] * 4}
    calls = _fake_runs(monkeypatch, vals)
    track.measure("ref", "cur", 3, tmp_path, inject="partial=0.15")
    assert [c[0] for c in calls] == ["reference", "current", "current", "reference", "reference", "current"]
    assert {c[1] for c in calls if c[0] == "reference"} == {None}
    assert {c[1] for c in calls if c[0] == "current"} == {"partial=0.15"}


@pytest.mark.parametrize("first, again, regressions", [
    (1.20, 1.20, ["ratio:a"]),  # suspect, confirmed -> fails
    (1.20, 1.01, []),           # suspect, not confirmed -> passes
    (1.03, None, []),           # inside the threshold: not re-measured
])
def test_confirmation_rule(monkeypatch, first, again, regressions):
    cur = [{"ratio:a": first}] * 2 + ([{"ratio:a": again}] * 2 if again else [])
    calls = _fake_runs(monkeypatch, {"reference": [{"ratio:a": 1.0}] * 4, "current": cur})
    monkeypatch.setattr(track, "worktree", lambda rev, repo: _null_tree())
    result = track.track(Path("cur"), "HEAD", rounds=2, confirm=2, gates={"ratio:a": 0.10})
    assert result["regressions"] == regressions
    assert len(calls) == (8 if again else 4)
    out = track.format_rows(result)
    assert ("REGRESSION" in out) == bool(regressions) and "a" in out


class _null_tree:
    def __enter__(self):
        return "ref"

    def __exit__(self, *exc):
        return False


def test_worktree_checks_out_the_revision_and_removes_it(tmp_path):
    repo = tmp_path / "repo"
    (repo / "benchmarks").mkdir(parents=True)
    (repo / track.BENCHMARK).write_text("# v1\n")
    git = ["git", "-c", "user.email=t@t", "-c", "user.name=t"]
    subprocess.run(["git", "init", "-q", str(repo)], check=True)
    subprocess.run(git + ["-C", str(repo), "add", "."], check=True)
    subprocess.run(git + ["-C", str(repo), "commit", "-qm", "v1"], check=True)
    (repo / track.BENCHMARK).write_text("# v2 (uncommitted)\n")
    with track.worktree("HEAD", repo) as ref:
        assert (ref / track.BENCHMARK).read_text() == "# v1\n"
    assert not ref.exists()
    with pytest.raises(UserError, match="not a commit"):
        with track.worktree("no-such-rev", repo):
            pass


def test_stored_gates_are_measured_and_tight():
    data = json.loads(track.GATES.read_text())
    gates = track.load_gates()
    assert set(gates) == set(data["figures"]) and len(gates) >= 5
    for name, f in data["figures"].items():
        assert len(f["values"]) >= 10, name                      # from at least 10 unchanged runs
        assert f["threshold"] >= f["max_unchanged_change"], name  # quiet on the measured runs
        assert f["false_alarms"] == 0, name
    partial = [data["injected"][k] for k in data["injected"] if k.startswith("partial=0.15")]
    assert partial and all(d["fails_every_time"] for d in partial)


def test_bad_gate_file_and_bad_revision_are_one_line(tmp_path, capsys):
    (tmp_path / "g.json").write_text("{}")
    with pytest.raises(UserError, match="ratio-gate file"):
        track.load_gates(tmp_path / "g.json")
    (tmp_path / "ok.json").write_text(json.dumps({"figures": {"ratio:a": {"threshold": 0.1}}}))
    assert main(["bench-track", "--against", "no-such-rev-xyz", "--rounds", "1", "--gates", str(tmp_path / "ok.json")]) == 2
    err = capsys.readouterr().err
    assert "no-such-rev-xyz" in err and len(err.strip().splitlines()) == 1


@pytest.mark.parametrize("spec, waits", [("partial=0.5", ["partial"]), ("engine=0.5", ["full", "partial"])])
def test_injection_targets(monkeypatch, spec, waits):
    import contextlib

    from benchmarks import inject
    from flexiffusion.engine import StepEngine
    from flexiffusion.schedule import Step

    @contextlib.contextmanager
    def plain(self, step, keep=None):  # stands in for the engine's own step
        yield self

    waited = []
    monkeypatch.setattr(StepEngine, "step", plain)
    monkeypatch.setattr(inject, "_busy", lambda s: waited.append(s))
    remove = inject.install(spec)
    try:
        for step in (Step.full(), Step.partial(2)):
            before = len(waited)
            with StepEngine.step(object(), step):
                pass
            if step.kind in waits:
                assert len(waited) == before + 1 and waited[-1] >= 0
            else:
                assert len(waited) == before
    finally:
        remove()
    assert StepEngine.step is plain
    with pytest.raises(UserError, match="partial=0.15"):
        inject.parse("partial=fast")
    with pytest.raises(UserError):
        inject.parse("sampler=0.1")
