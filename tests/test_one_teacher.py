"""One keyed teacher stage for searches and table rows: the search's evaluator and a row (bench.rows.measure) on
the same model, grid and seeds share the teacher's images and features (sampled and extracted once), whatever their
batch sizes, threads, fitness or extractor; the one batched sampling loop gives the same images as before."""
from __future__ import annotations

import pytest
import torch

import bench.quality.rfid as rfid_module
from baselines.registry import Context, Experiment
from bench.cache import Cache
from bench.evaluation import relative_fid
from bench.evaluation.evaluator import Evaluator
from bench.evaluation.setting import EvaluationSetting, ExecutionMode
from bench.models import load_model
from bench.rows import RowSetting, _CallCounter as _Calls, as_record, measure
from bench.store import ResultStore
from flexiffusion.schedule import Plan

GRID, N = 4, 10

pytestmark = pytest.mark.filterwarnings("ignore:FID statistics of")


@pytest.fixture
def teacher_work(monkeypatch):
    """Teacher generations (the teacher plan built on a cache miss) and teacher feature extractions."""
    made = {"images": 0, "features": 0}
    plan = rfid_module.teacher_plan

    def counting_plan(n):
        made["images"] += 1
        return plan(n)

    save = Cache.save

    def counting_save(self, stage, key, value, label="", fmt="pt"):
        if stage == "features" and str(label).startswith("teacher-"):
            made["features"] += 1
        return save(self, stage, key, value, label, fmt)

    monkeypatch.setattr(rfid_module, "teacher_plan", counting_plan)
    monkeypatch.setattr(Cache, "save", counting_save)
    return made


def test_a_search_then_a_row_sample_the_teacher_once(tmp_path, teacher_work):
    cache = tmp_path / "cache"
    # the search's evaluation: its own batch size and threads, MSE fitness
    setting = EvaluationSetting.for_images(N, grid_length=GRID, batch_size=N, threads=1, fitness="mse")
    ev = Evaluator(setting, cache_dir=cache)
    search_calls = _Calls(ev.bundle.unet)
    try:
        ev.prepare()
        ev.evaluate([Plan.from_tokens("f p3 f p3".split())])
    finally:
        search_calls.close()
    assert teacher_work == {"images": 1, "features": 1}
    assert search_calls.calls == GRID + GRID  # the teacher (one batch) and the candidate (2 full + 2 partial)

    bundle = load_model("embedded")
    row_setting = RowSetting(n_images=N, teacher_steps=GRID, batch_size=5)
    run = Experiment.from_dict({"method": "deepcache", "config": {"steps": GRID, "interval": 2, "branch": 3}}
                               ).build(bundle, Context(None, cache, progress=False))
    from bench.rows import teacher_macs

    run.macs(), teacher_macs(bundle)   # MACs are counted by tracing the U-Net once per process: not sampling
    row_calls = _Calls(bundle.unet)
    try:
        with ResultStore(tmp_path / "results.sqlite") as store:
            rows, reused = measure(bundle, run, row_setting, store, cache, progress=False)
    finally:
        row_calls.close()
    assert not reused and as_record(rows)["rfid"] >= 0
    assert teacher_work == {"images": 1, "features": 1}  # the row read the search's teacher images and features
    from bench.rows import LATENCY_REPEATS, LATENCY_WARMUP

    method = GRID * 2                                       # 2 batches of 5, 4 U-Net calls each
    timed = GRID * (LATENCY_WARMUP + LATENCY_REPEATS)      # the latency measurement: one batch per run
    assert row_calls.calls == method + timed                   # no teacher sampling among them


def test_teacher_key_ignores_batch_threads_fitness_and_extractor_not_the_mode(tmp_path):
    bundle = load_model("embedded")
    rows_teacher = relative_fid(bundle, range(N), GRID, gen_batch_size=5, extractor="digits-cnn",
                                cache_dir=tmp_path).teacher.key()

    def key(**kw):
        s = EvaluationSetting.for_images(N, **{"grid_length": GRID, **kw})
        return Evaluator(s, cache_dir=tmp_path).teacher().teacher.key()

    assert key() == rows_teacher
    assert key(batch_size=3, threads=1, fitness="fid") == rows_teacher
    assert key(mode=ExecutionMode(dtype="bf16")) != rows_teacher        # other numerics: another teacher
    assert key(grid_length=GRID + 1) != rows_teacher
    assert EvaluationSetting.for_images(N, grid_length=GRID, batch_size=3).key() != \
        EvaluationSetting.for_images(N, grid_length=GRID).key()        # the evaluation itself stays keyed


def test_one_sampling_loop_keeps_the_images():
    """``generate_latents`` and the evaluator both run ``sample_batches``: the same seeds give the same images
    whatever the batching path, and a stop-and-resume run equals one from noise."""
    from bench.generate import generate_images, sample_batches

    bundle = load_model("embedded")
    plan = Plan.from_tokens("f p3 n f p2 p2".split())
    seeds = list(range(6))
    direct = generate_images(bundle, plan, seeds, batch_size=3, progress=False)
    seen = []
    latents = sample_batches(bundle, plan, seeds, batch_size=3, stops=[3, len(plan)], cache_branches=(2, 3),
                             on_stop=lambda stop, states: seen.append((stop, [s.index for s in states])))
    assert seen == [(3, [3, 3])]
    from bench.generate import decode_uint8

    assert torch.equal(decode_uint8(bundle, latents, 3), direct)
