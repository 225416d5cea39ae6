"""``flexbench search-bench``: the naive-vs-fast search benchmark (see :mod:`bench.search.benchmark`).

    flexbench search-bench --preset embedded-50 --images 64 --iterations 10 --options channels_last,bf16,compile
"""
from __future__ import annotations

import json

from flexiffusion.errors import UserError


def run(args) -> int:
    from bench.search.benchmark import BenchCase, format_report, run_benchmark
    from flexiffusion.io import atomic_write_json

    counts = ("n_m", "initial", "parents", "children", "population")
    if args.images < 2 or args.iterations < 0 or any(getattr(args, k) is not None and getattr(args, k) < 1
                                                      for k in counts):
        raise UserError("search-bench needs --images >= 2, --iterations >= 0 and --n-m, --initial, --parents, "
                        "--children, --population >= 1")
    options = tuple(o for o in (args.options or "").split(",") if o)
    case = BenchCase(args.preset, args.images, args.iterations, args.seed, args.threads, args.batch_size,
                     args.layout, options, args.keep_features, args.n_m, args.initial,
                     args.parents, args.children, args.population)
    def save(report):
        if args.json:
            atomic_write_json(args.json, json.loads(json.dumps(report, default=str)))

    report = run_benchmark(case, args.work_dir, log=lambda m: print(m, flush=True), on_update=save)
    print(format_report(report))
    if args.json:
        print(f"wrote {args.json}")
    return 0 if report["identical"] else 1


def register(sub) -> None:
    p = sub.add_parser("search-bench", help="naive vs fast (dedup + prefix reuse) search, then execution options",
                       description=__doc__.split("\n\n")[0])
    p.add_argument("--preset", default="embedded-50", help="search preset (default embedded-50)")
    p.add_argument("--images", type=int, default=64, help="images per candidate (default 64)")
    p.add_argument("--iterations", type=int, default=10, help="Algorithm 1 iterations (default 10)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--n-m", type=int, default=None, help="segments per mutation, Algorithm 2's n_m (default: the "
                                                        "search's default)")
    p.add_argument("--initial", type=int, default=None, help="initial population size (default: the preset's)")
    p.add_argument("--parents", type=int, default=None, help="Algorithm 1's n_p (default: the preset's; B.2: 25)")
    p.add_argument("--children", type=int, default=None, help="n_c (default: the preset's; B.2: 5)")
    p.add_argument("--population", type=int, default=None, help="n_u (default: the preset's; B.2: 300)")
    p.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    p.add_argument("--batch-size", type=int, default=250)
    p.add_argument("--layout", default="tile", choices=("tile", "compact"))
    p.add_argument("--options", default="", help="execution options on top, comma-separated: "
                                                 "channels_last,bf16,compile")
    p.add_argument("--keep-features", action="store_true",
                   help="states keep the space's branches' features (resume at partial steps; more memory)")
    p.add_argument("--work-dir", default=None, help="folder for caches and the results store (default: a temp dir)")
    p.add_argument("--json", default=None, help="also write the report as JSON here")
    p.set_defaults(func=run)
    register_fast(sub)


def run_fast(args) -> int:
    import tempfile

    from bench.search.fast_bench import B2, FastBenchCase, format_fast_report, run_fast_bench
    from bench.search.setup import _ints
    from flexiffusion.io import atomic_write_json

    b2 = B2 if args.paper else {}
    case = FastBenchCase(args.preset, args.images, args.iterations if args.iterations is not None
                         else b2.get("iterations", 10), tuple(_ints(args.seeds, "--seeds")), args.threads,
                         args.batch_size, *(getattr(args, k) if getattr(args, k) is not None else b2.get(k)
                                            for k in ("initial", "parents", "children", "population")),
                         args.naive_iterations, args.naive_evaluations, args.exact_iterations, args.final_images, args.screen_stages,
                         args.screen_z)
    if case.images < 2 or case.iterations < 1 or case.naive_iterations < 0:
        raise UserError("search-fast-bench needs --images >= 2, --iterations >= 1, --naive-iterations >= 0")

    def save(report):
        if args.json:
            atomic_write_json(args.json, json.loads(json.dumps(report, default=str)))

    work = args.work_dir or tempfile.mkdtemp(prefix="search-fast-bench-")
    report = run_fast_bench(case, work, log=lambda m: print(m, flush=True), on_update=save)
    print(format_fast_report(report))
    if args.json:
        print(f"wrote {args.json}")
    return 0


def register_fast(sub) -> None:
    p = sub.add_parser("search-fast-bench", help="the fast mode vs naive and exact search at the paper's settings "
                       "(B.2 with --paper), bests re-evaluated exactly on held-out images",
                       description="Runs flexbench search --fast, a short naive Algorithm 1 (its rate projects the "
                                   "full length) and flexbench search (exact) on the same preset and seeds, one after "
                                   "the other on this machine (run it alone: timings).")
    p.add_argument("--preset", default="embedded-50")
    p.add_argument("--paper", action="store_true", help="B.2's settings: initial 50, n_p 25, n_c 5, n_u 300, "
                                                        "100 iterations")
    p.add_argument("--images", type=int, default=250, help="images per candidate (default 250)")
    p.add_argument("--iterations", type=int, default=None, help="iterations of the fast arm (default 10; --paper 100)")
    p.add_argument("--seeds", default="0", help="search seeds, e.g. 0,1,2")
    p.add_argument("--initial", type=int, default=None)
    p.add_argument("--parents", type=int, default=None)
    p.add_argument("--children", type=int, default=None)
    p.add_argument("--population", type=int, default=None)
    p.add_argument("--naive-iterations", type=int, default=1, help="iterations of the naive arm (default 1)")
    p.add_argument("--naive-evaluations", type=int, default=None, help="stop the naive arm after this many "
                   "evaluations (its rate projects the full length)")
    p.add_argument("--exact-iterations", type=int, default=None, help="iterations of the exact arm (default: the "
                                                                      "fast arm's; 0: none)")
    p.add_argument("--final-images", type=int, default=1000, help="held-out images of the bests' exact rFID")
    p.add_argument("--screen-stages", default=None)
    p.add_argument("--screen-z", type=float, default=None)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--batch-size", type=int, default=250)
    p.add_argument("--work-dir", default=None)
    p.add_argument("--json", default=None)
    p.set_defaults(func=run_fast)
