"""The main job runs end to end on the shipped embedded model (small settings) and caches the teacher."""
import json

from bench.cli import main


def test_demo_small(tmp_path, capsys):
    args = ["demo", "--n", "12", "--steps", "10", "--interval", "5", "--branch", "3", "--latency-batch", "2",
            "--latency-repeats", "1", "--batch-size", "6", "--cache-dir", str(tmp_path / "cache"),
            "--out", str(tmp_path / "demo.json")]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "teacher (DDIM)" in out and "uniform N=5 b=3" in out and "rFID" in out
    rows = json.loads((tmp_path / "demo.json").read_text())["rows"]
    teacher, cand = rows
    assert teacher["NFE"] == 10 and cand["NFE"] == 10
    assert abs(teacher["speedup (MACs)"] - 1) < 1e-9 and cand["speedup (MACs)"] > 1.5
    assert abs(teacher["rFID"]) < 1e-3 < cand["rFID"]  # FID(A, A) = 0 up to sqrtm round-off
    assert (tmp_path / "cache" / "teacher-images").is_dir()


def test_demo_bad_branch(capsys):
    assert main(["demo", "--branch", "42", "--n", "4", "--steps", "10"]) == 2
    assert "branch 42 out of range" in capsys.readouterr().err
