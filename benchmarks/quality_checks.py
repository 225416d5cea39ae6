"""Tracked quality figures: rFID (bench.evaluation.relative_fid, ``digits-cnn`` extractor) of fixed schedules on the
shipped embedded model, 50-step DDIM grid, fixed seeds.  ``benchmarks/test_quality_regression_bench.py`` records
them as ``quality:`` entries for ``flexbench bench-compare``.

A fixed plan with fixed seeds is deterministic on one host, so the only noise the tolerance has to cover is float32
kernel differences (other CPU, thread count, batch size).  ``--spread`` measures it here: the figures under torch
thread counts 1 and 2 and generation batch sizes 16 / 32 / all, and, for scale, the same plans on a disjoint seed
block (what a change of the images, not of the kernels, does):

    PYTHONPATH=. OMP_NUM_THREADS=1 python -m benchmarks.quality_checks --spread

Teacher and candidates are generated in the same run (no cache), so both see the same kernels.
"""
from __future__ import annotations

import argparse
import json
import time

GRID = 50  # DDIM steps of the base grid (the teacher: 50 full steps)
N_IMAGES = 192
SEEDS = tuple(range(N_IMAGES))
OTHER_SEEDS = tuple(range(10_000, 10_000 + N_IMAGES))  # the disjoint seed block of --spread
BATCH_SIZE = N_IMAGES  # generation batch of the tracked run

# tolerance = max(SPREAD_FACTOR x the largest kernel spread measured by --spread, TOLERANCE_FLOOR x the figure):
# see docs/benchmarks.md for the measured numbers
SPREAD_FACTOR = 10.0
TOLERANCE_FLOOR = 0.002


def plans():
    """The fixed schedules: DeepCache uniform N=5 / N=10 with branch 3, and step skipping (every other step null)."""
    from baselines.deepcache import uniform_plan
    from flexiffusion.schedule import Plan

    return [uniform_plan(GRID, interval=5, branch=3), uniform_plan(GRID, interval=10, branch=3),
            Plan.from_tokens(["f", "n"] * (GRID // 2), name="skip-every-2nd")]


def compute(seeds=SEEDS, batch_size: int = BATCH_SIZE, threads: int = 1) -> dict[str, float]:
    """``{"rfid_<plan>": rFID}`` of every fixed plan (teacher and candidates generated here, nothing cached)."""
    from bench.evaluation import relative_fid
    from bench.models import load_model
    from flexiffusion.threads import num_threads

    with num_threads(threads):
        bundle = load_model("embedded")
        rfid = relative_fid(bundle, seeds, GRID, gen_batch_size=batch_size, extractor="digits-cnn", cache=False)
        return {f"rfid_{p.name}": float(rfid(p)["rfid"]) for p in plans()}


def tolerance(value: float, spread: float) -> float:
    """Absolute tolerance of one figure: a multiple of the measured kernel spread, floored at a share of the figure."""
    return max(SPREAD_FACTOR * spread, TOLERANCE_FLOOR * abs(value))


def spread() -> dict:
    """The figures under each kernel condition, their max - min per plan, and the seed-block change."""
    conditions = {"threads=1 batch=all": dict(threads=1, batch_size=N_IMAGES),
                  "threads=2 batch=all": dict(threads=2, batch_size=N_IMAGES),
                  "threads=1 batch=32": dict(threads=1, batch_size=32),
                  "threads=1 batch=16": dict(threads=1, batch_size=16)}
    runs = {}
    for name, kw in conditions.items():
        t0 = time.perf_counter()
        runs[name] = compute(**kw)
        print(f"{name}: {json.dumps(runs[name])} ({time.perf_counter() - t0:.0f} s)", flush=True)
    runs["other seeds"] = compute(OTHER_SEEDS)
    print(f"other seeds: {json.dumps(runs['other seeds'])}", flush=True)
    kernel = {k: max(runs[n][k] for n in conditions) - min(runs[n][k] for n in conditions)
              for k in runs["threads=1 batch=all"]}
    seed_change = {k: runs["other seeds"][k] - runs["threads=1 batch=all"][k] for k in kernel}
    return {"runs": runs, "kernel_spread": kernel, "seed_block_change": seed_change}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--spread", action="store_true", help="measure the spread across threads / batch sizes / seeds")
    args = p.parse_args(argv)
    print(json.dumps(spread() if args.spread else compute(), indent=1, sort_keys=True))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
