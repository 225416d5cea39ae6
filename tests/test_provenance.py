"""Honest provenance: rows and search evaluations record the thread count and device they were measured with (not
the process default at write time), and a row's latency comes from the latency harness (warm-up, repeats, median
and IQR on a fixed batch) next to the generation pass's own wall time."""
from __future__ import annotations

import statistics

import pytest
import torch

from baselines.registry import Context, Experiment
from bench.cli import main
from bench.rows import LATENCY_IMAGES, LATENCY_REPEATS, LATENCY_WARMUP, RowSetting, as_record, measure
from bench.store import ResultStore
from flexiffusion.threads import num_threads

pytestmark = pytest.mark.filterwarnings("ignore:FID statistics of")


def test_row_records_its_threads_device_and_controlled_latency(tmp_path):
    from bench.models import load_model

    bundle = load_model("embedded")
    setting = RowSetting(n_images=10, teacher_steps=2, batch_size=10)
    run = Experiment.from_dict({"method": "ddim", "config": {"steps": 2}}).build(bundle, Context(None, tmp_path))
    other = 1 if torch.get_num_threads() != 1 else 2
    with ResultStore(tmp_path / "results.sqlite") as store:
        with num_threads(other):
            rows, reused = measure(bundle, run, setting, store, tmp_path, progress=False)
        assert not reused
        assert {r["threads"] for r in rows} == {other} and {r["device"] for r in rows} == {"cpu"}
        rec = as_record(rows)
        lat = next(r for r in rows if r["metric"] == "latency_s_per_image")["extra"]["latency"]
        assert lat["images"] == LATENCY_IMAGES and lat["warmup"] == LATENCY_WARMUP
        assert len(lat["values_s"]) == LATENCY_REPEATS and all(v > 0 for v in lat["values_s"])
        assert rec["latency_s_per_image"] == pytest.approx(statistics.median(lat["values_s"]) / LATENCY_IMAGES)
        assert rec["latency_iqr_s_per_image"] >= 0 and rec["generation_s_per_image"] > 0
        with num_threads(other):   # the same threads: read back, not re-timed
            again, reused = measure(bundle, run, setting, store, tmp_path, progress=False)
        assert reused and as_record(again) == rec
        (key,) = store.keys("row/")
        assert key.startswith("row/embedded/") and key.split("/")[2] == run.label
        (timed,) = store.keys("latency/")                  # the latency is its own result
        assert {r["metric"] for r in store.get(timed)} == {"latency_s_per_image", "latency_iqr_s_per_image"}
        assert "latency_s_per_image" not in {r["metric"] for r in store.get(key)}
        lean, _ = measure(bundle, run, setting, store, tmp_path, progress=False, latency=False)
        assert "latency_s_per_image" not in as_record(lean)


def test_search_rows_record_the_evaluations_threads(tmp_path, capsys):
    """``flexbench search --threads 1`` in a process running 2 torch threads stores threads = 1."""
    store = tmp_path / "s.sqlite"
    args = ["search", "--preset", "embedded-41", "--images", "4", "--iterations", "0", "--initial", "2",
            "--threads", "1", "--batch-size", "4", "--store", str(store), "--out", str(tmp_path / "o"),
            "--cache-dir", str(tmp_path / "cache")]
    with num_threads(2):
        assert main(args) == 0
    capsys.readouterr()
    with ResultStore(store) as s:
        frame = s.frame()
    assert len(frame) and set(frame["threads"]) == {1} and set(frame["device"]) == {"cpu"}


def test_the_latency_header_names_the_timed_batch():
    from bench.results import header

    assert header("latency_s_per_image") == f"s/image (batch {LATENCY_IMAGES})"
