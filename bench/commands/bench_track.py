"""``flexbench bench-track``: the tight same-host gate of the latency ratios (bench/track.py) and the trend page of
the benchmark history (``flexbench bench-history``, bench/history.py).

    flexbench bench-track --against origin/main --history bench-history.jsonl --commit $GITHUB_SHA
    flexbench bench-history --history bench-history.jsonl --out bench-history/ --markdown comment.md
"""
from __future__ import annotations

from pathlib import Path


def run_track(args) -> int:
    import os

    from tqdm.auto import tqdm

    from bench import history, track
    from flexiffusion.io import atomic_write_json

    repo = Path.cwd()
    if not (repo / track.BENCHMARK).exists():
        from flexiffusion.errors import UserError

        raise UserError(f"no {track.BENCHMARK} here: run bench-track from the repository's root")
    gates = track.load_gates(args.gates or track.GATES)
    track.resolve(args.against, repo)   # a bad revision: one line before any progress bar
    inject = os.environ.get(track.INJECT_ENV) or None
    if inject:
        print(f"injected slowdown on the current tree only: {track.INJECT_ENV}={inject}")
    bar = tqdm(total=2 * args.rounds, desc=f"A/B vs {args.against}", unit="run")

    def tick():
        if bar.n >= bar.total:  # re-measuring a suspect
            bar.total += 2 * args.confirm
            bar.refresh()
        bar.update(1)

    try:
        result = track.track(repo, args.against, args.rounds, args.confirm, gates, inject, tick)
    finally:
        bar.close()
    print(track.format_rows(result))
    n = len(result["regressions"])
    for name in result["regressions"]:
        r = next(x for x in result["rows"] if x["figure"] == name)
        print(f"REGRESSION {name}: {100 * r['worse_by']:+.1f} % worse than {args.against} on this machine "
              f"(threshold {100 * r['threshold']:.1f} %), confirmed by re-measuring")
    print(f"{len(result['rows'])} ratios against {args.against}: {n} confirmed regression(s)")
    if args.json:
        atomic_write_json(Path(args.json), result)
    if args.history:
        history.append(args.history, history.entry("bench-track", history.from_track(result), args.commit))
        print(f"appended to {args.history}")
    return 1 if n else 0


def run_history(args) -> int:
    import warnings

    from bench import history

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        lines = history.read(args.history)
    for w in caught:
        print(f"warning: {w.message}")
    page = history.render(lines, args.out)
    md = (Path(args.out) / "summary.md").read_text()
    if args.markdown:
        Path(args.markdown).write_text(md)
    print(f"{len(lines)} runs in {args.history}; trend page {page}" + (f"; summary {args.markdown}" if args.markdown
                                                                          else ""))
    return 0


def register(sub) -> None:
    p = sub.add_parser("bench-track", help="same-host A/B gate of the latency ratios against a git revision "
                       "(re-measures a suspect before failing; exit 1 on a confirmed regression)", description=__doc__)
    p.add_argument("--against", default="HEAD", help="reference revision, measured in a temporary worktree "
                   "(default HEAD: the committed tree against the working tree)")
    p.add_argument("--rounds", type=int, default=2,
                   help="A/B pairs of benchmark runs (default 2: what the stored gates were measured for)")
    p.add_argument("--confirm", type=int, default=2, help="A/B pairs re-measured to confirm a suspect (default 2; "
                   "0 fails on the first measurement)")
    p.add_argument("--gates", default=None, help="ratio-gate file (default benchmarks/expected/ratio_gates.json)")
    p.add_argument("--history", default=None, help="append this run to a JSON-lines benchmark history")
    p.add_argument("--commit", default=None, help="commit of this run, for the history")
    p.add_argument("--json", default=None, help="write the full result (every run's values) here")
    p.set_defaults(func=run_track)

    h = sub.add_parser("bench-history", help="trend page and pull-request summary of the benchmark history",
                       description=__doc__)
    h.add_argument("--history", required=True, help="JSON-lines history written by bench-compare / bench-track")
    h.add_argument("--out", required=True, help="folder of the trend page (index.html, one plot per figure)")
    h.add_argument("--markdown", default=None, help="also write the short summary here (a pull-request comment)")
    h.set_defaults(func=run_history)
