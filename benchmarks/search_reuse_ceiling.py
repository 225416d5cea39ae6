"""Ceiling of dedup and prefix reuse for the naive-vs-fast search benchmark (issue 9 section 5), model-free.

Runs the real Algorithm 1 (``flexiffusion.search.evolve``) on a preset's space with a stand-in fitness (a fixed
pseudo-random value per plan digest plus its avg MACs fraction, so cheaper is not always better) and counts U-Net
evaluations exactly as the evaluator does: *naive* = every requested plan from noise; *distinct* = each plan once
(dedup); *fast* = each distinct plan resumed at the deepest state an unbounded state store would hold (before every
full step of every earlier evaluated plan, any branch kept: ``--keep-features``; or only where the resuming plan's
step is full: the default).  Prints the factors per n_m.  No image is made: the fitness only steers the search, so
these are the search's own reuse statistics under that stand-in, not a timing.

    PYTHONPATH=. python benchmarks/search_reuse_ceiling.py --preset embedded-50 --iterations 10 --seeds 0,1,2
"""
from __future__ import annotations

import argparse
import hashlib
from dataclasses import replace


def simulate(preset_name: str, iterations: int, seed: int, n_m: int, initial: int | None = None):
    from bench.search.presets import get_preset
    from bench.search.setup import search_config, space_of
    from flexiffusion.search.evolution import evolve

    preset = get_preset(preset_name)
    space, model, budget = space_of(preset)
    cost = space.plan_cost(model.step_macs)
    config = replace(search_config(preset, iterations=iterations, seed=seed), n_m=n_m, **({"initial": initial} if initial else {}))
    requested: list = []

    def fitness(plans):
        requested.extend(plans)
        out = []
        for p in plans:
            h = int(hashlib.sha256(p.digest().encode()).hexdigest()[:8], 16) / 2 ** 32
            out.append(h + 2.0 * (1.0 - cost(p) / max(budget, 1e-9)))
        return out

    evolve(space, cost, fitness, budget, config, dedup=False)
    evals = lambda steps: sum(s.evaluates for s in steps)
    naive = sum(evals(p.steps) for p in requested)
    seen, distinct, fast_any, fast_full = {}, 0, 0, 0
    stored: set[tuple] = set()          # token prefixes before a full step of an evaluated plan
    for p in requested:
        d = p.digest()
        if d in seen:
            continue
        seen[d] = True
        toks = tuple(p.tokens())
        distinct += evals(p.steps)
        k_any = max((k for k in range(1, len(toks)) if toks[:k] in stored), default=0)
        k_full = max((k for k in range(1, len(toks)) if toks[:k] in stored and p.steps[k].kind == "full"
                      ), default=0)
        fast_any += evals(p.steps[k_any:])
        fast_full += evals(p.steps[k_full:])
        stored.update(toks[:j] for j in range(1, len(toks)) if p.steps[j].kind == "full")
    return {"n_m": n_m, "seed": seed, "requested": len(requested), "distinct": len(seen),
            "dedup": naive / distinct, "prefix_full": distinct / fast_full, "prefix_any": distinct / fast_any,
            "total_full": naive / fast_full, "total_any": naive / fast_any}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--preset", default="embedded-50")
    ap.add_argument("--iterations", type=int, default=10)
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--nm", default="1,2,3")
    ap.add_argument("--initial", type=int, default=None)
    a = ap.parse_args()
    print("n_m seed requested distinct dedup prefix(full-only) prefix(any) total(full-only) total(any)")
    for n_m in (int(v) for v in a.nm.split(",")):
        for seed in (int(v) for v in a.seeds.split(",")):
            r = simulate(a.preset, a.iterations, seed, n_m, a.initial)
            print(f"{n_m} {seed} {r['requested']} {r['distinct']} {r['dedup']:.2f} {r['prefix_full']:.2f} "
                  f"{r['prefix_any']:.2f} {r['total_full']:.2f} {r['total_any']:.2f}", flush=True)


if __name__ == "__main__":
    main()
