"""Exact benchmark figures that cannot be noisy: NFE, MACs per step type and per plan, plan digests of a fixed
seeded search.  Compared with ``benchmarks/expected/exact.json`` by ``benchmarks/test_exact_bench.py``; any change
fails with a unified diff.

The search is Algorithm 1 (flexiffusion.search.evolution.evolve) on the embedded-50 space with a fixed seed and a
*synthetic* fitness computed from the plan's tokens only (integers: no model, no float kernels), so its plan
digests depend only on the search code, the space and the cost model.  Regenerate after an intended change with

    PYTHONPATH=. python -m benchmarks.exact_checks --write
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

EXPECTED = Path(__file__).with_name("expected") / "exact.json"


def _synthetic_fitness(plan) -> float:
    """Deterministic stand-in fitness: penalise partial / null steps early in the grid (integer arithmetic)."""
    return float(sum((len(plan) - i) * (0 if s.kind == "full" else 2 if s.kind == "null" else s.branch)
                     for i, s in enumerate(plan.steps)))


def compute() -> dict:
    import numpy as np

    from bench.cost.schedule_cost import CostModel
    from bench.search.presets import get_preset
    from flexiffusion.schedulers import grid_length
    from flexiffusion.search.evolution import EvolutionConfig, evolve
    from flexiffusion.search.space import SearchSpace

    preset = get_preset("embedded-50")
    cost = CostModel.for_preset(preset.cost_preset)
    space = SearchSpace(preset.segments, preset.branches, preset.intervals, cost.num_branches,
                        grid_length(preset.scheduler, preset.steps), layout="tile", solver=preset.solver)
    rng = np.random.default_rng(0)
    plans = {"cheapest": space.compile(space.cheapest(cost.step_macs)),
             "dearest": space.compile(space.dearest(cost.step_macs)),
             **{f"random-{i}": space.compile(space.random(rng)) for i in range(3)}}
    budget = preset.budget(cost.full_macs)
    result = evolve(space, cost.avg_macs, lambda ps: [_synthetic_fitness(p) for p in ps], budget,
                    EvolutionConfig(iterations=3, parents=4, children=3, population=20, initial=8, seed=0))
    return {
        "step_macs_paper": {("null" if b == 0 else "full" if b == len(cost.step_macs) - 1 else f"partial-b{b}"): int(m)
                            for b, m in enumerate(cost.step_macs)},
        "plans": {name: {"nfe": p.nfe, "grid": len(p), "total_macs": int(cost.total_macs(p)), "digest": p.digest()}
                  for name, p in plans.items()},
        "search": {"best_digest": result.best.plan.digest(), "best_fitness": result.best.fitness,
                   "pareto_digests": sorted(e.plan.digest() for e in result.pareto()),
                   "evaluated": len(result.evaluated)},
    }


def dumps(data: dict) -> str:
    return json.dumps(data, indent=1, sort_keys=True) + "\n"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--write", action="store_true", help=f"regenerate {EXPECTED}")
    args = p.parse_args(argv)
    text = dumps(compute())
    if args.write:
        EXPECTED.write_text(text)
        print(f"wrote {EXPECTED}")
    else:
        print(text, end="")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
