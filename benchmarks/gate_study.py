"""The ratio gates' study: run-to-run spread of every tracked latency ratio on an unchanged tree, thresholds set
from it, the false alarms they give, and the injected slowdowns they catch (issue 24; docs/benchmarks.md).

    PYTHONPATH=. python -m benchmarks.gate_study --runs 10 --inject partial=0.10,partial=0.15,engine=0.10,engine=0.15 \
        --inject-runs 4 --write

Every run is the ratio benchmark (benchmarks/test_ratio_bench.py) in a fresh process, as ``flexbench bench-track``
runs it.  The gate statistic of ``bench-track --rounds r`` is the relative change between the medians of ``r``
current and ``r`` reference runs; under an unchanged tree its distribution is sampled by every split of the unchanged
runs into two disjoint groups of ``r``.  Threshold of a figure = ``MARGIN`` x the largest |change| over those splits,
at least ``FLOOR``.  Detection: a group of ``r`` injected runs against a group of ``r`` unchanged ones (every
pair of disjoint groups); a slowdown "fails every time" when every such comparison exceeds a threshold.
"""
from __future__ import annotations

import argparse
import itertools
import json
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.track import GATES, run_benchmark, worse_by  # noqa: E402

MARGIN = 1.25   # threshold = MARGIN x the largest unchanged change over all splits
FLOOR = 0.02    # never tighter than 2 %
ROUNDS = 2      # bench-track's default --rounds these gates are made for


def collect(n: int, work: Path, inject: str | None = None, label: str = "unchanged") -> list[dict]:
    """``n`` fresh-process runs of the ratio benchmark: ``[{figure: value, "_better": {figure: direction}}]``."""
    from tqdm.auto import tqdm

    runs = []
    for i in tqdm(range(n), desc=f"ratio benchmark ({label})", unit="run"):
        entries = run_benchmark(ROOT, work / f"{label}-{i}.json", inject)
        runs.append({**{k: float(v["value"]) for k, v in entries.items()},
                     "_better": {k: v.get("better", "lower") for k, v in entries.items()}})
    return runs


def splits(n: int, r: int):
    """Every pair of disjoint index groups of size r (reference, current)."""
    for a in itertools.combinations(range(n), r):
        rest = [i for i in range(n) if i not in a]
        for b in itertools.combinations(rest, r):
            yield a, b


def changes(runs, name, better, r):
    """The gate statistic over every split of unchanged runs into disjoint reference / current groups of r."""
    return [worse_by([runs[i][name] for i in a], [runs[j][name] for j in b], better) for a, b in splits(len(runs), r)]


def study(unchanged: list[dict], injected: dict, r: int = ROUNDS) -> dict:
    better = unchanged[0]["_better"]
    figures = {}
    for name in sorted(better):
        values = [run[name] for run in unchanged]
        null = changes(unchanged, name, better[name], r)
        threshold = max(FLOOR, MARGIN * max(abs(c) for c in null))
        med = statistics.median(values)
        figures[name] = {"threshold": round(threshold, 4), "better": better[name], "values": values,
                         "median": med, "relative_spread": (max(values) - min(values)) / med,
                         "max_unchanged_change": max(abs(c) for c in null),
                         "false_alarms": sum(c > threshold for c in null), "unchanged_splits": len(null)}
    detect = {}
    for spec, runs in injected.items():
        pairs = list(itertools.product(itertools.combinations(range(len(unchanged)), r),
                                       itertools.combinations(range(len(runs)), r)))
        per, caught = {}, [False] * len(pairs)
        for name in figures:
            ch = [worse_by([unchanged[i][name] for i in a], [runs[j][name] for j in b], better[name])
                  for a, b in pairs]
            fails = [c > figures[name]["threshold"] for c in ch]
            caught = [x or y for x, y in zip(caught, fails)]
            per[name] = {"min_change": min(ch), "median_change": statistics.median(ch), "fails": sum(fails),
                         "comparisons": len(ch), "values": [run[name] for run in runs]}
        detect[spec] = {"figures": per, "comparisons": len(pairs), "caught": sum(caught),
                        "fails_every_time": all(caught)}
    return {"rounds": r, "margin": MARGIN, "floor": FLOOR, "runs": len(unchanged), "figures": figures,
            "injected": detect}


def main(argv=None) -> int:
    import os
    import platform
    import tempfile

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--runs", type=int, default=10)
    p.add_argument("--inject", default="", help="comma-separated slowdowns, e.g. partial=0.15,engine=0.15")
    p.add_argument("--inject-runs", type=int, default=4)
    p.add_argument("--rounds", type=int, default=ROUNDS)
    p.add_argument("--write", action="store_true", help=f"store the gates in {GATES.relative_to(ROOT)}")
    p.add_argument("--raw", default=None, help="also keep every run's values here (JSON)")
    args = p.parse_args(argv)
    started = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    load = os.getloadavg()
    with tempfile.TemporaryDirectory() as tmp:
        unchanged = collect(args.runs, Path(tmp))
        injected = {spec: collect(args.inject_runs, Path(tmp), spec, spec.replace("=", "-"))
                    for spec in args.inject.split(",") if spec}
    result = study(unchanged, injected, args.rounds)
    result.update(measured=started, host=f"{platform.node()} {platform.processor() or platform.machine()}",
                  cpu_count=os.cpu_count(), load_before=load, load_after=os.getloadavg())
    for name, f in result["figures"].items():
        print(f"{name:36} median {f['median']:.4g}  spread {100 * f['relative_spread']:.1f} %  largest unchanged "
              f"change {100 * f['max_unchanged_change']:.1f} %  threshold {100 * f['threshold']:.1f} %  false alarms "
              f"{f['false_alarms']}/{f['unchanged_splits']}")
    for spec, d in result["injected"].items():
        worst = {n: round(100 * v["min_change"], 1) for n, v in d["figures"].items()}
        print(f"injected {spec}: caught in {d['caught']} of {d['comparisons']} comparisons; smallest change per "
              f"figure (%): {worst}")
    if args.raw:
        Path(args.raw).write_text(json.dumps({"unchanged": unchanged, "injected": injected}, indent=1))
    if args.write:
        GATES.write_text(json.dumps(result, indent=1, sort_keys=True) + "\n")
        print(f"wrote {GATES}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
