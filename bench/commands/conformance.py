"""``flexbench conformance``: every cost cell the paper prints (bench/experiments/paper/published.toml) against our
value from the real architectures with random weights, and the paper's claims against the evidence the experiments
stored; the comparison is stored as one result and rendered from the store (reports/conformance.py) into
OUT/conformance/.

    flexbench conformance --store runs/results.sqlite --out runs/conformance
    flexbench conformance --model ddpm-cifar10 --model ldm-4-g     # only those models' cells (seconds when cached)
"""
from __future__ import annotations

import time

DEFAULT_STORE = "runs/results.sqlite"


def register(sub) -> None:
    p = sub.add_parser("conformance", help="the paper's printed cost numbers against ours, its claims against the "
                                           "stored evidence",
                       description="Compare every cost cell the paper prints (NFE, MACs, speed-up, Table 5's search "
                                   "cost, Fig. B.1) with the same cell computed from the real architectures with "
                                   "random weights (paper MAC convention), and judge the paper's claims from the "
                                   "results the experiments stored.  The first run traces every model's MACs "
                                   "(minutes for LSUN and SD; cached on disk afterwards).")
    p.add_argument("--store", default=DEFAULT_STORE, help=f"results store (default {DEFAULT_STORE})")
    p.add_argument("--out", default="runs/conformance", help="output folder (OUT/conformance/...)")
    p.add_argument("--model", action="append", default=[], metavar="MODEL",
                   help="only the cells (and claim evidence) of MODEL: ddpm-cifar10, ddpm-bedroom, ddpm-church, "
                        "ldm-4-g, sd-v1.5 (repeatable or comma-separated; default all)")
    p.add_argument("--quiet", action="store_true", help="no progress bar; print the summary only")
    p.set_defaults(func=run)


def run(args) -> int:
    from flexiffusion.errors import UserError

    from bench.experiments.conformance import run as conform
    from bench.store import ResultStore
    from reports.conformance import render

    from bench.experiments.models import get_model

    models = [m.strip() for item in args.model for m in item.split(",") if m.strip()]
    if args.model and not models:
        raise UserError("--model: name at least one model")
    for m in models:   # bad input before the store is opened: nothing written
        get_model(m)
    t0 = time.perf_counter()
    with ResultStore(args.store) as store:
        outcome = conform(store, models or None, progress=not args.quiet)
        rendered = render(store, outcome.key, args.out)
    if args.quiet:
        print(rendered.markdown.split("## Cost cells")[0].rstrip())
    else:
        print(rendered.markdown)
    counts = ", ".join(f"{n} {k}" for k, n in outcome.counts.items())
    print(f"conformance: {sum(outcome.counts.values())} cost cells ({counts}); {len(outcome.claims)} claim rows; "
          f"{'reused' if outcome.reused else 'stored'} {outcome.key}; {time.perf_counter() - t0:.1f} s; written to "
          f"{rendered.folder}")
    return 0
