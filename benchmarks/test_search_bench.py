"""The naive-vs-fast search benchmark at a small setting (the full measurement: ``flexbench search-bench``).

Naive (every child sampled from noise, duplicates too) and fast (results-store dedup + prefix reuse) run the same
seeded Algorithm 1 on the embedded model, eager fp32; each is one benchmark round.  The speed-up, the U-Net work
split and the identical-values proof are in ``extra_info``; the test fails if any fitness value differs.
Run with ``pytest benchmarks/test_search_bench.py --benchmark-enable``.
"""
from __future__ import annotations

import pytest

from bench.search.benchmark import BenchCase, run_benchmark

CASE = BenchCase("embedded-50", images=4, iterations=2, seed=0, threads=1)


def test_search_naive_vs_fast(benchmark, tmp_path):
    out = benchmark.pedantic(run_benchmark, args=(CASE, tmp_path), kwargs={"log": lambda m: None}, rounds=1,
                             iterations=1)
    benchmark.extra_info.update(
        images=out["n_images"], iterations=CASE.iterations, speedup=out["speedup"], identical=out["identical"],
        naive_evaluations_per_hour=out["naive"]["evaluations_per_hour"],
        fast_evaluations_per_hour=out["fast"]["evaluations_per_hour"], work=out["work"],
        duplicates=out["duplicates"], requested=out["naive"]["requested_evaluations"])
    assert out["identical"]
    assert out["work"]["fast"] < out["work"]["naive"]
