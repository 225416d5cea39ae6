"""``flexbench search`` (Flexiffusion's segment-wise evolutionary search) and ``flexbench space`` (a space's size).

    flexbench space --preset embedded-50
    flexbench search --preset embedded-50 --seed 0 --store runs/results.sqlite --out runs/search/embedded-50
"""
from __future__ import annotations

import argparse

from bench.search.setup import G, _ints, space_of
from flexiffusion.search.space import LAYOUTS, count_under_budget


def run_space(args) -> int:
    from bench.search.presets import get_preset

    preset = get_preset(args.preset)
    space, cost, budget = space_of(preset, layout=args.layout, segments=args.segments, branches=args.branches,
                                   intervals=args.intervals, budget_g=args.budget, model=args.model)
    macs = cost.step_macs
    lo, hi = (space.avg_macs(c, macs) for c in (space.cheapest(macs), space.dearest(macs)))
    under = count_under_budget(space, macs, budget)
    under_d = count_under_budget(space, macs, budget, distinct=True) if under is not None else None
    nfe = space.nfe_range()
    lines = [
        f"preset {preset.name}: {preset.source}; model {preset.model} ({cost.name}, {cost.num_branches} branches), "
        f"teacher {preset.scheduler} on {space.grid} steps ({cost.full_macs / G:.4g} G per full step)",
        f"space: layout {space.layout}, solver {space.solver}, N-segment {list(space.segments)}, "
        f"branch {list(space.branches)}, interval {list(space.intervals)}",
        f"candidates: {space.count()} ({space.count():.3e}); distinct plans: {space.count(distinct=True)}",
        f"NFE {nfe[0]}..{nfe[1]}; avg MACs {lo / G:.4g}..{hi / G:.4g} G (paper convention)",
        f"budget {budget / G:.4g} G avg MACs ({100 * budget / cost.full_macs:.1f} % of the teacher): " + (
            f"{under} candidates ({under:.3e}, {under / space.count():.3%}), {under_d} distinct plans"
            if under is not None else "count under the budget not computed (the exact count is too large here)"),
    ]
    if budget < lo:
        lines.append(f"warning: the budget is below the cheapest candidate ({lo / G:.4g} G): a search would refuse it")
    print("\n".join(lines))
    return 0


def run_search(args) -> int:
    from tqdm.auto import tqdm

    from bench.search.session import SearchRequest, prepare, run_prepared

    p = prepare(SearchRequest.from_namespace(args))
    print(p.describe())
    print("teacher: sampling or reading its images and statistics ...")
    full = p.cost.full_macs
    bar = tqdm(total=p.run.config.iterations + 1, desc="search", unit="it")
    best = {"best": "-"}

    def iteration(stats, fitness):
        bar.update(1)
        best.update(it=stats["iteration"], best=f"{stats['best_fitness']:.4g}",
                    macs=f"{100 * stats['best_avg_macs'] / full:.1f}%")
        evaluation(fitness)

    def evaluation(fitness):
        bar.set_postfix(**best, evaluated=fitness.done, cached=fitness.cached)

    try:
        result, summary, fitness = run_prepared(p, iteration, evaluation)
    finally:
        bar.close()
    top, out = result.best, p.out
    if "fast" in summary:
        f = summary["fast"]
        print(f"fast mode: {f['evaluated']} candidates, {f['screened']} stopped early; fast best "
              f"{f['best']['fitness']:.5g}; {len(result.evaluated)} re-evaluated exactly (Pareto set and best):")
    print(f"best: {p.setting.fitness} {top.fitness:.5g}, avg MACs {top.avg_macs / G:.4g} G "
          f"({100 * top.avg_macs / full:.1f} % of the teacher), NFE {top.plan.nfe}, candidate {top.candidate.key()}")
    print(f"evaluations: {fitness.done} new, {fitness.cached} read from the store; {len(result.evaluated)} distinct; "
          f"Pareto set of {len(summary['pareto'])}; wrote {out / 'best.json'}, {out / 'pareto'}, "
          f"{out / 'summary.json'}")
    return 0


def run_compare(args) -> int:
    from bench.search.compare import compare

    rows = compare(args.summary, args.store, branches=_ints(args.branches, "branch"), limit=args.limit,
                   cache_dir=args.cache_dir)
    fit = [k for k in ("rfid", "fid", "mse") if k in rows[0]][0]
    print(f"{'method':13s} {'plan':40s} {'avg MACs':>9s} {'NFE':>4s} {fit:>9s}")
    for r in rows:
        print(f"{r['method']:13s} {r['plan'][:40]:40s} {r['macs_pct']:8.2f}% {int(r['nfe']):4d} {r[fit]:9.5g}")
    dc = [r for r in rows if r["method"] == "deepcache"]
    if dc:
        top = min(dc, key=lambda r: r[fit])
        verdict = "lower" if rows[0][fit] < top[fit] else "not lower"
        print(f"best candidate {fit} {rows[0][fit]:.5g} at {rows[0]['macs_pct']:.2f}% vs the best DeepCache uniform at "
              f"<= its MACs, {top['plan']} ({top['macs_pct']:.2f}%): {top[fit]:.5g} -> {verdict}")
    return 0


def _space_arguments(p) -> None:
    p.add_argument("--preset", required=True, help="search preset (listed below)")
    p.add_argument("--layout", default="tile", choices=LAYOUTS, help="where segments lie (default tile)")
    p.add_argument("--segments", help="N-segment choices overriding the preset's, e.g. 19,20,21")
    p.add_argument("--branches", help="branch choices overriding the preset's, e.g. 1,2,3")
    p.add_argument("--intervals", help="interval choices overriding the preset's, e.g. 1,2,3")
    p.add_argument("--budget", type=float, help="budget in G avg MACs overriding the preset's")
    p.add_argument("--model", default=None, help="the model to search on (must be the preset's; default: it)")


def _epilog() -> str:
    from bench.search.presets import describe

    return ("presets:\n" + describe() + "\n\nlayouts:\n"
            "  tile     segments tile the teacher's base grid (boundaries at round(j T / N)); default\n"
            "  compact  each segment is max(interval) steps; the candidate runs on N x max(interval) steps\n")


def register(sub) -> None:
    raw = argparse.RawDescriptionHelpFormatter
    p = sub.add_parser("search", help="Flexiffusion's segment-wise evolutionary search (Algorithms 1 and 2)",
                       description="Search segment-wise schedules under an avg-MACs budget; every evaluation goes "
                                   "to the results store at once, so a killed search resumes exactly where it "
                                   "stopped (rerun the same command).", epilog=_epilog(), formatter_class=raw)
    _space_arguments(p)
    p.add_argument("--seed", type=int, default=None, help="search seed (default 0)")
    p.add_argument("--iterations", type=int, default=None, help="Algorithm 1 iterations (B.2: 100)")
    p.add_argument("--parents", type=int, default=None, help="n_p (B.2: 25)")
    p.add_argument("--children", type=int, default=None, help="n_c (B.2: 5)")
    p.add_argument("--population", type=int, default=None, help="n_u (B.2: 300)")
    p.add_argument("--max-tries", type=int, default=None, help="mutation attempts per iteration (B.2: 200)")
    p.add_argument("--initial", type=int, default=None, help="initial population size (default 50)")
    p.add_argument("--n-m", type=int, default=None, help="segments per mutation, Algorithm 2's n_m (default 3)")
    p.add_argument("--images", type=int, default=None, help="images per candidate (default: the preset's)")
    p.add_argument("--first-seed", type=int, default=0, help="image seeds first-seed .. first-seed + images - 1")
    p.add_argument("--prompts", default=None, help="text models: a file of prompts, one per line, cycled over the "
                   "images (default: 'a handwritten <digit i mod 10>' for image i)")
    p.add_argument("--guidance", type=float, default=None, help="text models: classifier-free guidance scale "
                   "(default: the model's own, embedded-t2i 1.5)")
    p.add_argument("--fitness", default="rfid", choices=("rfid", "fid", "mse"), help="fitness (default rfid)")
    p.add_argument("--weights", default=None, help="model weights (local folder / HF cache id; default: the "
                                                   "loader's)")
    p.add_argument("--device", default="cpu", help="cpu (default), cuda or cuda:N")
    p.add_argument("--real", default=None, help="fitness fid: real images (folder) or statistics (FILE.npz); "
                                                "default: the model's")
    p.add_argument("--extractor", default=None, help="feature extractor of rFID / FID (default: the model's; "
                                                     "inception-v3-compat for the paper models)")
    p.add_argument("--extractor-weights", default=None, help="local weights file of the extractor")
    p.add_argument("--threads", type=int, default=None, help="torch threads while evaluating")
    p.add_argument("--batch-size", type=int, default=250)
    p.add_argument("--compile", action="store_true", help="torch.compile the U-Net (teacher too)")
    p.add_argument("--channels-last", action="store_true", help="channels_last memory format (teacher too)")
    p.add_argument("--dtype", default="fp32", choices=("fp32", "bf16", "bf16-weights"),
                   help="evaluation dtype: bf16 autocast or bf16 weights (teacher too; refused where the device has "
                        "no native bfloat16 kernels)")
    p.add_argument("--executor", default="local", choices=("local", "ray"), help="where candidates are evaluated")
    p.add_argument("--fast", action="store_true", help="fast mode: a child is evaluated on a first block of images "
                   "and stops when it cannot matter to Algorithm 1 (adaptive image counts); the final Pareto set and "
                   "best are re-evaluated exactly (docs/search-cost.md). Default: the exact mode")
    p.add_argument("--screen-stages", default=None, help="--fast: image counts of the screening stages "
                   "(default 32,96)")
    p.add_argument("--screen-z", type=float, default=None, help="--fast: margin in units of the measured rFID "
                   "noise (default 2)")
    p.add_argument("--screen-epsilon", type=float, default=None, help="--fast: chance per parent draw that a stopped "
                   "child would have been the parent (default 1e-3)")
    p.add_argument("--actors", type=int, default=2, help="Ray actors (default 2)")
    p.add_argument("--address", default=None, help="address of an existing Ray cluster (default: start a local one)")
    p.add_argument("--store", default="runs/results.sqlite", help="results store (SQLite; default "
                                                                  "runs/results.sqlite)")
    p.add_argument("--name", default=None, help="name of this search in the store (default preset-layout-sSEED)")
    p.add_argument("--out", default=None, help="output folder (default runs/search/NAME)")
    p.add_argument("--cache-dir", default=None, help="teacher images / features cache")
    p.set_defaults(func=run_search)

    c = sub.add_parser("search-compare", help="a finished search's best candidate vs DeepCache uniform schedules",
                       description="Evaluate DeepCache's uniform schedules at or below the best candidate's avg MACs "
                                   "under the search's own evaluation setting and compare (values stored).")
    c.add_argument("--summary", required=True, help="summary.json of a finished search")
    c.add_argument("--store", default="runs/results.sqlite")
    c.add_argument("--branches", default=None, help="DeepCache branches (default: the search space's)")
    c.add_argument("--limit", type=int, default=6, help="the N dearest uniform plans under the MACs (default 6)")
    c.add_argument("--cache-dir", default=None)
    c.set_defaults(func=run_compare)

    q = sub.add_parser("space", help="exact size of a search space (and under its budget)",
                       description="Print the exact number of candidates of a preset's space, its NFE and avg MACs "
                                   "ranges and the candidates under its budget.", epilog=_epilog(),
                       formatter_class=raw)
    _space_arguments(q)
    q.set_defaults(func=run_space)
