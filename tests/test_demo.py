"""The main job runs end to end on the shipped embedded model (small settings) and caches the teacher."""
import json
import math

import pytest
import torch

from bench.cli import main
from bench.cost.macs import PAPER, preset_table
from flexiffusion.threads import num_threads


def test_demo_small(tmp_path, capsys):
    args = ["demo", "--n", "12", "--steps", "10", "--interval", "5", "--branch", "3", "--latency-batch", "2",
            "--latency-repeats", "1", "--batch-size", "6", "--threads", "1", "--cache-dir", str(tmp_path / "cache"),
            "--out", str(tmp_path / "demo.json"), "--report", str(tmp_path / "report")]
    with num_threads(2):
        assert main(args) == 0
        assert torch.get_num_threads() == 2  # --threads is scoped to the job
    out = capsys.readouterr().out
    assert "teacher (DDIM)" in out and "uniform N=5 b=3" in out and "rFID" in out
    result = json.loads((tmp_path / "demo.json").read_text())
    rows = result["rows"]
    assert len(rows) == 2
    teacher, cand = rows
    assert [teacher["plan"], cand["plan"]] == ["teacher (DDIM)", "uniform N=5 b=3"]
    for row in rows:
        assert type(row["NFE"]) is int and row["n"] == 12
        for key in ("avg MACs (G)", "speedup (MACs)", "latency (ms/img)", "speedup (wall)", "FID", "rFID", "IS",
                    "precision", "recall"):
            assert type(row[key]) is float and math.isfinite(row[key]), (row["plan"], key)
        assert row["latency (ms/img)"] > 0 and row["FID"] > 0 and row["IS"] >= 1
        assert 0 <= row["precision"] <= 1 and 0 <= row["recall"] <= 1
    assert teacher["NFE"] == 10 and cand["NFE"] == 10 and teacher["speedup (wall)"] == 1.0
    # MACs from the table by hand: 10 steps, full at steps 0 and 5, partial(3) at the other 8.
    table = preset_table("embedded")
    full, partial = table.unet_macs("full", None, PAPER), table.unet_macs("partial", 3, PAPER)
    assert teacher["avg MACs (G)"] == full / 1e9 and teacher["speedup (MACs)"] == 1.0
    assert cand["avg MACs (G)"] == (2 * full + 8 * partial) / 10 / 1e9
    assert cand["speedup (MACs)"] == pytest.approx(10 * full / (2 * full + 8 * partial), rel=1e-12)
    # rFID: the teacher scored against itself is 0 up to sqrtm round-off; the candidate differs from it.
    assert abs(teacher["rFID"]) < 1e-3 < cand["rFID"]
    assert result["environment"]["threads"] == 1 and "torch" in result["environment"]
    assert (tmp_path / "cache" / "teacher-images").is_dir()
    page = (tmp_path / "report" / "index.html").read_text()
    assert "uniform N=5 b=3" in page and "<details><summary>provenance</summary>" in page
    assert page.count("<img src=") == 2 and len(list((tmp_path / "report" / "img").glob("*.png"))) == 2


def test_demo_second_run_reuses_the_store(tmp_path, capsys, monkeypatch):
    """Run twice with the same settings: the second run evaluates nothing (fidelity and latency are counted), takes
    the rows from the store and still writes the report (only the grid's images are sampled again)."""
    import importlib

    fidelity = importlib.import_module("bench.quality.fidelity")  # the module (its package re-exports the function)
    plan_latency = importlib.import_module("bench.cost.plan_latency")

    calls = {"fidelity": 0, "latency": 0}
    real_fid, real_lat = fidelity.fidelity, plan_latency.measure_plans

    def counted(name, fn):
        def wrapper(*a, **k):
            calls[name] += 1
            return fn(*a, **k)
        return wrapper

    monkeypatch.setattr(fidelity, "fidelity", counted("fidelity", real_fid))
    monkeypatch.setattr(plan_latency, "measure_plans", counted("latency", real_lat))
    args = ["demo", "--n", "10", "--steps", "10", "--latency-batch", "2", "--latency-repeats", "1",
            "--batch-size", "10", "--threads", "1", "--cache-dir", str(tmp_path / "cache"),
            "--store", str(tmp_path / "store.sqlite")]
    assert main(args + ["--out", str(tmp_path / "a.json"), "--report", str(tmp_path / "r1")]) == 0
    assert calls == {"fidelity": 2, "latency": 1}
    assert main(args + ["--out", str(tmp_path / "b.json"), "--report", str(tmp_path / "r2")]) == 0
    assert calls == {"fidelity": 2, "latency": 1}  # nothing evaluated again
    assert "reusing the stored results" in capsys.readouterr().out
    assert json.loads((tmp_path / "a.json").read_text()) == json.loads((tmp_path / "b.json").read_text())
    assert (tmp_path / "r2" / "index.html").is_file()


def test_demo_bad_branch(capsys):
    assert main(["demo", "--branch", "42", "--n", "4", "--steps", "10"]) == 2
    assert "branch 42 out of range" in capsys.readouterr().err


def test_demo_bad_threads(capsys):
    assert main(["demo", "--threads", "0", "--n", "4", "--steps", "10"]) == 2
    assert "--threads 0" in capsys.readouterr().err
