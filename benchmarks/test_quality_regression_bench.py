"""Quality regressions: rFID of fixed schedules on the shipped embedded model (benchmarks/quality_checks.py: 50-step
DDIM grid, 192 fixed seeds, ``digits-cnn``), recorded as tracked ``quality:`` figures with an absolute tolerance
from the measured kernel spread, for ``flexbench bench-compare`` against benchmarks/expected/baseline.json.
"""
from __future__ import annotations

import math

import torch

from benchmarks import quality_checks as qc

# max - min of each figure over torch threads 1 / 2 and generation batch 16 / 32 / 192 on the shared 2-core machine
# (`python -m benchmarks.quality_checks --spread`, docs/benchmarks.md)
# at load ~5-6, 02:20-02:32 UTC 2026-12-02 (rounded up to 2 digits)
KERNEL_SPREAD = {"rfid_uniform-N5-b3": 7.1e-5, "rfid_uniform-N10-b3": 3.5e-4, "rfid_skip-every-2nd": 7.8e-5}


def test_quality_figures(benchmark):
    figures = benchmark.pedantic(qc.compute, rounds=1, iterations=1)
    assert set(figures) == set(KERNEL_SPREAD)
    benchmark.extra_info.update(model="embedded", extractor="digits-cnn", grid=qc.GRID, n_images=qc.N_IMAGES,
                                batch_size=qc.BATCH_SIZE, torch_threads=torch.get_num_threads())
    benchmark.extra_info["tracked"] = {
        f"quality:{name}": {"value": v, "tolerance": qc.tolerance(v, KERNEL_SPREAD[name]),
                            "kernel_spread": KERNEL_SPREAD[name]}
        for name, v in figures.items()}
    assert all(math.isfinite(v) and v > 0 for v in figures.values())
