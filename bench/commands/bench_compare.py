"""``flexbench bench-compare BASELINE.json CURRENT.json``: exit 1 on a benchmark regression (bench/tracking.py);
``--history FILE`` appends the run to the benchmark history (bench/history.py)."""
from __future__ import annotations


def run(args) -> int:
    from bench import history
    from bench.tracking import compare, tracked

    baseline, current = tracked(args.baseline), tracked(args.current)
    problems = compare(baseline, current)
    for line in problems:
        print(f"REGRESSION {line}")
    print(f"{len(baseline)} tracked figures compared: {len(problems)} regression(s)")
    if args.history:
        history.append(args.history, history.entry("bench-compare", history.from_compare(baseline, current, problems),
                                                   args.commit))
        print(f"appended to {args.history}")
    return 1 if problems else 0


def register(sub) -> None:
    p = sub.add_parser("bench-compare", help="compare tracked benchmark figures with a baseline (exit 1 on regression)",
                       description=__doc__)
    p.add_argument("baseline", help="pytest-benchmark JSON of the baseline (e.g. benchmarks/expected/baseline.json)")
    p.add_argument("current", help="pytest-benchmark JSON of this run (--benchmark-json)")
    p.add_argument("--history", default=None, help="append this run to a JSON-lines benchmark history")
    p.add_argument("--commit", default=None, help="commit of this run, for the history (e.g. $GITHUB_SHA)")
    p.set_defaults(func=run)
