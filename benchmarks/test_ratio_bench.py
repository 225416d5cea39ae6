"""Latency ratios measured within one run on the embedded U-Net (bench.evaluation.cost_figures.cost_figures: paired,
interleaved rounds), recorded as tracked ``ratio:`` figures for ``flexbench bench-compare``.  Never absolute times.

Thresholds: RATIO_THRESHOLD (relative change in the worse direction) — see docs/benchmarks.md for the measured
run-to-run spread it is based on.
"""
from __future__ import annotations

from bench.evaluation.cost_figures import cost_figures

# about 2x the largest relative spread of 3 runs on the shared 2-core machine at load ~10 (docs/benchmarks.md):
# engine overhead 13.5 %, speed-ups 8-14 %, partial(1)/full 25 %, partial(3)/full 46 %
RATIO_THRESHOLD = 0.30
THRESHOLDS = {"ratio:partial_b1_over_full": 0.50, "ratio:partial_b3_over_full": 1.00}


def test_latency_ratios(benchmark):
    fig = benchmark.pedantic(cost_figures, args=("embedded",), kwargs=dict(batch_size=16, threads=1, steps=10,
                             interval=5, branches=(1, 3), repeats=5), rounds=1, iterations=1)
    tracked = {"ratio:engine_overhead_factor": {"value": 1 + fig["engine_overhead"], "better": "lower",
                                                "threshold": RATIO_THRESHOLD}}
    for b, r in fig["partial"].items():
        tracked[f"ratio:partial_b{b}_over_full"] = {"value": r["wall_fraction"], "better": "lower",
                                                   "threshold": RATIO_THRESHOLD}
    for r in fig["plans"]:
        tracked[f"ratio:wall_speedup_{r['plan']}"] = {"value": r["wall_speedup"], "better": "higher",
                                                     "threshold": RATIO_THRESHOLD}
    for name, t in THRESHOLDS.items():
        tracked[name]["threshold"] = t
    benchmark.extra_info["tracked"] = tracked
    assert all(v["value"] > 0 for v in tracked.values())
