"""Cost of one rFID candidate evaluation, split into its stages: sampling / features / distance.

The teacher is generated (and cached) before timing.  Everything is the real harness: the shipped embedded model
sampled by ``bench.generate.generate_images`` (through ``relative_fid``) and its ``digits-cnn``
extractor.  A missing or broken piece fails the benchmark; nothing is replaced by a stand-in.
Run with ``pytest benchmarks/test_quality_bench.py --benchmark-enable``; the model, extractor and image count are
in each result's ``extra_info``.
"""
from __future__ import annotations

import pytest
import torch

from baselines.deepcache import uniform_plan
from bench.evaluation import relative_fid
from bench.models import load_model

N_IMAGES, GRID = 32, 10


@pytest.fixture(scope="module")
def evaluator(tmp_path_factory):
    bundle = load_model("embedded")
    rfid = relative_fid(bundle, range(N_IMAGES), GRID, gen_batch_size=N_IMAGES, extractor="digits-cnn",
                        cache_dir=tmp_path_factory.mktemp("cache"))
    rfid.teacher_features().statistics(rfid.layer)  # teacher work happens once, outside the timings
    candidate = uniform_plan(GRID, interval=3, branch=2)
    images = rfid.sample(candidate)
    return rfid, candidate, images, rfid.features(images), bundle.name


def _info(benchmark, rfid, name):
    benchmark.extra_info.update(generator=name, extractor=rfid.extractor.name, n_images=rfid.n_images, grid=GRID,
                                torch_threads=torch.get_num_threads())


def test_candidate_sampling(benchmark, evaluator):
    rfid, candidate, _, _, name = evaluator
    _info(benchmark, rfid, name)
    images = benchmark.pedantic(rfid.sample, args=(candidate,), rounds=2, iterations=1)
    assert images.n == N_IMAGES


def test_candidate_features(benchmark, evaluator):
    rfid, _, images, _, name = evaluator
    _info(benchmark, rfid, name)
    fs = benchmark.pedantic(lambda: rfid.features(images), rounds=5, iterations=1)
    assert fs.n == N_IMAGES


def test_candidate_distance(benchmark, evaluator):
    rfid, _, _, fs, name = evaluator

    def distance():
        fs._stats.clear()  # the candidate's statistics are part of the distance stage
        return rfid.distance(fs)

    _info(benchmark, rfid, name)
    out = benchmark.pedantic(distance, rounds=5, iterations=1)
    assert out["rfid"] >= 0 and out["n_images"] == N_IMAGES


def test_candidate_end_to_end(benchmark, evaluator):
    rfid, candidate, _, _, name = evaluator
    _info(benchmark, rfid, name)
    out = benchmark.pedantic(rfid, args=(candidate,), rounds=1, iterations=1)
    benchmark.extra_info.update(rfid.timings)
    assert set(out) == {"rfid", "mse", "n_images"}
