"""Same-host A/B tracking of the latency ratios: the gate that is both tight and quiet (docs/benchmarks.md).

A ratio measured on one machine moves when the code changes, but also between machines (a partial step's small
convolutions against a full step's large ones cost differently on another CPU: up to 12 % measured) and with the
load of the moment.  A stored baseline from another host can therefore only hold loose thresholds.  Here the
reference is measured **on the same machine in the same job**: the reference revision is checked out in a temporary
git worktree and the ratio benchmark runs alternately on it and on the current tree (order A B B A A B ..., fresh
processes, each tree's code first on ``PYTHONPATH``), so host and slow load drift cancel.

A figure regresses when the median of its current runs is worse than the median of its reference runs by more than
its threshold (relative; thresholds from the measured spread of unchanged trees, ``benchmarks/expected/
ratio_gates.json``).  A suspected regression is **confirmed** by re-measuring (``confirm`` more A/B rounds) before it
fails: it fails only when the re-measurement alone is worse by more than the threshold too.
"""
from __future__ import annotations

import contextlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from flexiffusion.errors import UserError

BENCHMARK = "benchmarks/test_ratio_bench.py"
GATES = Path(__file__).resolve().parents[1] / "benchmarks" / "expected" / "ratio_gates.json"
INJECT_ENV = "FLEXBENCH_INJECT"


@dataclass
class Measurement:
    """Values of every tracked ratio per side (``"reference"`` / ``"current"``), one per benchmark run."""
    values: dict = field(default_factory=lambda: {"reference": {}, "current": {}})
    better: dict = field(default_factory=dict)

    def add(self, side: str, entries: dict) -> None:
        for name, e in entries.items():
            self.values[side].setdefault(name, []).append(float(e["value"]))
            self.better[name] = e.get("better", "lower")

    def names(self) -> list[str]:
        return sorted(set(self.values["reference"]) & set(self.values["current"]))


def load_gates(path=GATES) -> dict:
    """``{figure: threshold}`` from the measured gate file."""
    try:
        data = json.loads(Path(path).read_text())
        return {k: float(v["threshold"]) for k, v in data["figures"].items()}
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise UserError(f"{path} is not a ratio-gate file ({exc}): regenerate it with "
                        "`python -m benchmarks.gate_study --write`") from None


def worse_by(ref: list[float], cur: list[float], better: str) -> float:
    """Relative change of the medians in the worse direction (positive = worse)."""
    r, c = statistics.median(ref), statistics.median(cur)
    return (c - r) / r if better == "lower" else (r - c) / r


def judge(m: Measurement, gates: dict) -> list[dict]:
    """One row per figure: medians, change, threshold, ``suspect`` when worse by more than the threshold."""
    rows = []
    for name in m.names():
        if name not in gates:
            continue
        ref, cur = m.values["reference"][name], m.values["current"][name]
        change = worse_by(ref, cur, m.better[name])
        rows.append({"figure": name, "reference": statistics.median(ref), "current": statistics.median(cur),
                     "worse_by": change, "threshold": gates[name], "better": m.better[name],
                     "suspect": change > gates[name], "n": (len(ref), len(cur))})
    return rows


def tracked_of(path: Path) -> dict:
    from bench.tracking import tracked

    return {k.split("::", 1)[1]: v for k, v in tracked(path).items() if k.split("::", 1)[1].startswith("ratio:")}


def run_benchmark(tree: Path, out: Path, inject: str | None, benchmark: str = BENCHMARK) -> dict:
    """One run of the ratio benchmark with ``tree``'s code, in a fresh process; its tracked ratios."""
    env = {k: v for k, v in os.environ.items() if k != INJECT_ENV}
    env.update(PYTHONPATH=str(tree), OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    if inject:
        env[INJECT_ENV] = inject
    cmd = [sys.executable, "-m", "pytest", benchmark, "--benchmark-enable", f"--benchmark-json={out}", "-q",
           "-p", "no:cacheprovider", "-o", "addopts="]
    done = subprocess.run(cmd, cwd=tree, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        tail = (done.stdout + done.stderr).strip().splitlines()[-3:]
        raise UserError(f"the ratio benchmark failed in {tree} (exit {done.returncode}): {' | '.join(tail)}")
    return tracked_of(out)


def resolve(rev: str, repo: Path) -> str:
    """The commit hash of ``rev`` (UserError naming it when the repository has no such commit)."""
    check = subprocess.run(["git", "rev-parse", "--verify", f"{rev}^{{commit}}"], cwd=repo, capture_output=True,
                           text=True)
    if check.returncode != 0:
        raise UserError(f"--against {rev!r} is not a commit of the repository at {repo}: give a revision such as "
                        "HEAD, origin/main or a commit hash")
    return check.stdout.strip()


@contextlib.contextmanager
def worktree(rev: str, repo: Path):
    """A detached temporary git worktree of ``rev``; removed afterwards."""
    commit = resolve(rev, repo)
    tmp = Path(tempfile.mkdtemp(prefix="flexbench-ref-"))
    path = tmp / "tree"
    subprocess.run(["git", "worktree", "add", "--detach", str(path), commit], cwd=repo, check=True,
                   capture_output=True)
    try:
        if not (path / BENCHMARK).exists():
            raise UserError(f"revision {rev} has no {BENCHMARK}: choose a newer --against revision")
        yield path
    finally:
        subprocess.run(["git", "worktree", "remove", "--force", str(path)], cwd=repo, capture_output=True)
        subprocess.run(["git", "worktree", "prune"], cwd=repo, capture_output=True)
        with contextlib.suppress(OSError):
            tmp.rmdir()


def measure(ref_tree: Path, cur_tree: Path, rounds: int, work: Path, inject: str | None = None,
            progress=None, tag: str = "first") -> Measurement:
    """``rounds`` A/B pairs in the order A B, B A, A B, ... (drift cancels to first order)."""
    m = Measurement()
    for r in range(rounds):
        sides = (("reference", ref_tree), ("current", cur_tree))
        for side, tree in (sides if r % 2 == 0 else sides[::-1]):
            out = work / f"{tag}-{side}-{r}.json"
            m.add(side, run_benchmark(tree, out, inject if side == "current" else None))
            if progress is not None:
                progress()
    return m


def track(repo: Path, against: str = "HEAD", rounds: int = 2, confirm: int = 2, gates: dict | None = None,
          inject: str | None = None, progress=None) -> dict:
    """The A/B gate: measure, and re-measure the suspects' benchmark before failing.

    Returns ``{"rows": [...], "confirm_rows": [...] | None, "regressions": [names], "against": rev}``."""
    gates = load_gates() if gates is None else gates
    with worktree(against, repo) as ref, tempfile.TemporaryDirectory() as work:
        first = measure(ref, repo, rounds, Path(work), inject, progress)
        rows = judge(first, gates)
        suspects = [r["figure"] for r in rows if r["suspect"]]
        confirm_rows = None
        if suspects and confirm:
            again = measure(ref, repo, confirm, Path(work), inject, progress, tag="confirm")
            confirm_rows = judge(again, gates)
    confirmed = {r["figure"] for r in (confirm_rows or []) if r["suspect"]}
    regressions = [f for f in suspects if (f in confirmed or not confirm)]
    return {"against": against, "rounds": rounds, "confirm": confirm, "inject": inject, "rows": rows,
            "confirm_rows": confirm_rows, "regressions": regressions,
            "values": first.values}


def format_rows(result: dict) -> str:
    confirm = {r["figure"]: r for r in (result["confirm_rows"] or [])}
    lines = [f"{'figure':34} {'reference':>10} {'current':>10} {'worse by':>9} {'threshold':>9}  verdict"]
    for r in result["rows"]:
        c = confirm.get(r["figure"])
        if not r["suspect"]:
            verdict = "ok"
        elif c is None:
            verdict = "REGRESSION" if r["figure"] in result["regressions"] else "suspect"
        else:
            verdict = (f"REGRESSION (confirmed: {100 * c['worse_by']:+.1f} % on re-measuring)" if c["suspect"]
                       else f"not confirmed ({100 * c['worse_by']:+.1f} % on re-measuring)")
        lines.append(f"{r['figure'].removeprefix('ratio:'):34} {r['reference']:10.4g} {r['current']:10.4g} "
                     f"{100 * r['worse_by']:+8.1f}% {100 * r['threshold']:8.1f}%  {verdict}")
    return "\n".join(lines)
