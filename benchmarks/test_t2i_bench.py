"""Cost of the embedded text-to-image model's two figures: CLIP score of 1000 images with the shipped scoring CLIP
(through ``bench.quality.clip_score.ClipScorer``, target < 10 s on 2 cores) and one teacher image (50-step PLMS,
batched classifier-free guidance, batch 50).

    FLEXBENCH_BENCH_THREADS=2 pytest benchmarks/test_t2i_bench.py --benchmark-enable
"""
from __future__ import annotations

import os

import pytest
import torch

from bench.embedded.t2i.captions import prompt_set
from bench.quality.sources import digits_uint8
from flexiffusion.threads import num_threads

THREADS = int(os.environ.get("FLEXBENCH_BENCH_THREADS", 2))


@pytest.fixture(scope="module")
def bundle():
    from bench.models import load_model

    return load_model("embedded-t2i")


def test_clip_score_1000_images(benchmark, bundle):
    from bench.embedded.t2i.clip_model import register
    from bench.quality.clip_score import ClipScorer

    scorer = ClipScorer(register(), pretrained=bundle.extras["clip_weights"], device="cpu", batch_size=500)
    real = digits_uint8("all")
    images = real[:1000]
    prompts, _ = prompt_set(1000)
    benchmark.extra_info.update(n_images=1000, torch_threads=THREADS)
    with num_threads(THREADS):
        out = benchmark.pedantic(scorer, args=(images, prompts), rounds=3, iterations=1)
    assert out["n_images"] == 1000


def test_teacher_sampling_per_batch_of_50(benchmark, bundle):
    from bench.evaluation.gates_t2i import generate

    prompts, _ = prompt_set(50)
    benchmark.extra_info.update(n_images=50, sampler="PLMS 50, batched CFG 3.0", torch_threads=THREADS)
    with num_threads(THREADS):
        images = benchmark.pedantic(generate, args=(bundle, prompts, list(range(50)), 50, 3.0, 50, False),
                                    rounds=1, iterations=1)
    assert images.shape == (50, 1, 16, 16) and images.dtype == torch.uint8
