"""Cost of one rFID candidate evaluation, split into its stages: sampling / features / distance.

The teacher is generated (and cached) before timing.  Sampling uses the real harness
(``bench.generate.generate_images`` on the embedded model, or the random ``tiny-ddpm`` bundle while the embedded
weights are not installed) when it imports, else a stand-in
generator; features use ``digits-cnn`` when its weights are installed, else the tests' projection extractor.
Run with ``pytest benchmarks/test_quality_bench.py --benchmark-enable``; the chosen generator/extractor and the
image count are in each result's ``extra_info``.
"""
from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

N_IMAGES, GRID = 32, 10


def _extractor() -> str:
    try:
        from bench.quality.extractors import Extractor

        Extractor("digits-cnn").fingerprint  # loads its weights
        return "digits-cnn"
    except Exception:
        from quality_standins import register

        return register()


def _generator():
    """(name, plan -> images, teacher plan, candidate plan)."""
    try:
        from bench.generate import generate_images
        from bench.models import load_model
        from flexiffusion.errors import UserError
        from flexiffusion.schedule import Plan

        try:
            bundle = load_model("embedded")
        except UserError:  # weights not installed: the random tiny model has the same cost structure
            bundle = load_model("tiny-ddpm")
        gen = lambda plan: generate_images(bundle, plan, range(N_IMAGES), batch_size=N_IMAGES, progress=False)
        return bundle.name, gen, Plan.full(GRID), Plan.uniform(GRID, interval=3, branch=2)
    except ImportError:
        from quality_standins import random_images

        base = random_images(N_IMAGES, seed=0).float() / 255
        gen = lambda level: (base + level * torch.randn(base.shape, generator=torch.Generator().manual_seed(1))).clamp(0, 1)
        return "stand-in", gen, 0.0, 0.1


@pytest.fixture(scope="module")
def evaluator(tmp_path_factory):
    from bench.quality import RelativeFID, TeacherSpec

    name, gen, teacher_plan, candidate = _generator()
    spec = TeacherSpec(name, "random", "ddim", GRID, tuple(range(N_IMAGES)))
    rfid = RelativeFID(gen, spec, extractor=_extractor(), plan=teacher_plan,
                       cache_dir=tmp_path_factory.mktemp("cache"))
    rfid.teacher_features().statistics(rfid.layer)  # teacher work happens once, outside the timings
    images = rfid.sample(candidate)
    return rfid, candidate, images, rfid.features(images), name


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
