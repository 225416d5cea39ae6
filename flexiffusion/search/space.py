"""Flexiffusion's segment-wise search space (Sec. 4.1, appendices B.1 and E): N-segment x branch x interval.

A candidate is N segments, each with its own (branch, interval).  A segment is one full step, then
``interval - 1`` partial steps at its branch, then null steps to the segment's end.  A candidate compiles to a
:class:`~flexiffusion.schedule.Plan`; the plan is what runs, is costed and is stored.

Where segments lie (the paper is not self-consistent, see docs/search.md):

* ``tile`` (default): the N segments tile the teacher's base grid of T steps, segment j spanning steps
  ``[r(j T / N), r((j + 1) T / N))`` with ``r(x) = floor(x + 1/2)``; every candidate is a plan over the teacher's grid.
* ``compact`` (E.1 literally): each segment is ``max(I)`` steps; the candidate runs on a grid of ``N * max(I)`` steps.

The DPM-Solver variant (E.2, ``solver="dpm"``): interval k is the order of that segment's single-step DPM-Solver
interval; a segment of order k is k grid steps (first full, the rest partial at its branch; branch = the U-Net's
last branch means "full"), no null steps; the grid has ``sum(orders)`` steps and runs with
:func:`flexiffusion.schedulers.make_segment_dpm` and the candidate's order list.

avg MACs of any candidate = its total MACs / T (the teacher's evaluations on its base grid), so candidates,
DeepCache plans and the teacher are costed alike.
"""
from __future__ import annotations

import hashlib
import math
from dataclasses import asdict, dataclass
from typing import Callable, Sequence

import numpy as np

from ..errors import UserError
from ..schedule import Plan, Step, avg_macs

LAYOUTS = ("tile", "compact")
SOLVERS = ("ddim", "dpm")


@dataclass(frozen=True)
class Segment:
    """One segment: a full step, ``interval - 1`` partial steps at ``branch``, null steps to its end."""

    branch: int
    interval: int

    def token(self) -> str:
        return f"{self.branch}.{self.interval}"


@dataclass(frozen=True)
class Candidate:
    """A point of the space: its segments in order (N = ``len(candidate)``)."""

    segments: tuple[Segment, ...]

    def __post_init__(self):
        object.__setattr__(self, "segments", tuple(self.segments))

    def __len__(self) -> int:
        return len(self.segments)

    def __iter__(self):
        return iter(self.segments)

    def key(self) -> str:
        """``branch.interval`` of every segment, e.g. ``"3.2 1.1 6.3"``."""
        return " ".join(s.token() for s in self.segments)

    @classmethod
    def from_key(cls, key: str) -> "Candidate":
        try:
            return cls(tuple(Segment(*map(int, t.split("."))) for t in key.split()))
        except (TypeError, ValueError):
            raise UserError(f"malformed candidate {key!r}: use 'branch.interval' per segment, e.g. '3.2 1.1'") from None

    @classmethod
    def of(cls, pairs: Sequence[tuple[int, int]]) -> "Candidate":
        return cls(tuple(Segment(int(b), int(i)) for b, i in pairs))


def _choices(name: str, values, low: int, high: int | None, what: str) -> tuple[int, ...]:
    try:
        out = tuple(sorted({int(v) for v in values}))
    except (TypeError, ValueError):
        raise UserError(f"{name} choices must be integers, got {values!r}") from None
    if not out:
        raise UserError(f"empty {name} choice list: give at least one {what}")
    bad = [v for v in out if v < low or (high is not None and v > high)]
    if bad:
        rng = f"{low}..{high}" if high is not None else f">= {low}"
        raise UserError(f"{name} choice {bad[0]} out of range: {what} must be {rng}")
    return out


@dataclass(frozen=True)
class SearchSpace:
    """Segment-count choices S, branch choices B, interval choices I on a model with ``num_branches`` branches.

    ``grid``: the teacher's base grid T (tile: the candidates' grid too; compact and dpm: the cost denominator).
    """

    segments: tuple[int, ...]
    branches: tuple[int, ...]
    intervals: tuple[int, ...]
    num_branches: int
    grid: int
    layout: str = "tile"
    solver: str = "ddim"

    def __post_init__(self):
        if self.layout not in LAYOUTS:
            raise UserError(f"unknown layout {self.layout!r}: choose one of {', '.join(LAYOUTS)}")
        if self.solver not in SOLVERS:
            raise UserError(f"unknown search-space solver {self.solver!r}: choose one of {', '.join(SOLVERS)}")
        if int(self.num_branches) < 1:
            raise UserError(f"the U-Net needs at least one branch, got {self.num_branches}")
        if int(self.grid) < 1:
            raise UserError(f"base grid length must be >= 1, got {self.grid}")
        object.__setattr__(self, "num_branches", int(self.num_branches))
        object.__setattr__(self, "grid", int(self.grid))
        object.__setattr__(self, "segments", _choices("N-segment", self.segments, 1, None, "a number of segments"))
        object.__setattr__(self, "branches", _choices("branch", self.branches, 1, self.num_branches,
                                                      "a branch of this U-Net"))
        top = 3 if self.solver == "dpm" else None
        object.__setattr__(self, "intervals", _choices("interval", self.intervals, 1, top,
                                                       "a DPM-Solver order" if top else "an interval"))
        if self.solver == "ddim" and self.layout == "tile":
            n, shortest = min(((n, min(np.diff(self.bounds(n)))) for n in self.segments), key=lambda x: x[1])
            if max(self.intervals) > shortest:
                raise UserError(
                    f"interval {max(self.intervals)} does not fit: {n} segments tiling a "
                    f"{self.grid}-step grid are as short as {shortest} steps; lower the intervals or the N-segment "
                    "choices, or use --layout compact")

    # ---- identity ---------------------------------------------------------------------------------------------------
    def to_dict(self) -> dict:
        return asdict(self)

    def key(self) -> str:
        return hashlib.sha256(repr(sorted(self.to_dict().items())).encode()).hexdigest()[:16]

    def check(self, candidate: Candidate) -> Candidate:
        """Raise :class:`UserError` unless ``candidate`` lies in the space."""
        if len(candidate) not in self.segments:
            raise UserError(f"candidate has {len(candidate)} segments, not one of {self.segments}")
        for s in candidate:
            if s.branch not in self.branches or s.interval not in self.intervals:
                raise UserError(f"segment {s.token()} outside the space (branches {self.branches}, "
                                f"intervals {self.intervals})")
        return candidate

    # ---- layout -----------------------------------------------------------------------------------------------------
    def bounds(self, n: int) -> list[int]:
        """Step index where each of ``n`` segments starts, plus the grid end."""
        if self.solver == "dpm":
            raise UserError("the dpm variant's segment bounds depend on each segment's order: use compile()")
        if self.layout == "compact":
            return [j * max(self.intervals) for j in range(n + 1)]
        return [math.floor(j * self.grid / n + 0.5) for j in range(n + 1)]

    def _segment_steps(self, s: Segment, length: int) -> list[Step]:
        if self.solver == "dpm":
            rest = Step.full() if s.branch == self.num_branches else Step.partial(s.branch)
            return [Step.full()] + [rest] * (s.interval - 1)
        return [Step.full()] + [Step.partial(s.branch)] * (s.interval - 1) + [Step.null()] * (length - s.interval)

    def compile(self, candidate: Candidate) -> Plan:
        """The plan of ``candidate`` (named by its key; the dpm variant's orders are :meth:`orders`)."""
        self.check(candidate)
        steps: list[Step] = []
        if self.solver == "dpm":
            for s in candidate:
                steps += self._segment_steps(s, s.interval)
        else:
            b = self.bounds(len(candidate))
            for j, s in enumerate(candidate):
                steps += self._segment_steps(s, b[j + 1] - b[j])
        return Plan(tuple(steps), f"flexiffusion[{candidate.key()}]")

    def orders(self, candidate: Candidate) -> list[int] | None:
        """The dpm variant's per-segment solver orders (None for ddim spaces)."""
        return [s.interval for s in candidate] if self.solver == "dpm" else None

    def grid_length(self, candidate: Candidate) -> int:
        """Length of the grid the candidate runs on."""
        if self.solver == "dpm":
            return sum(s.interval for s in candidate)
        return self.grid if self.layout == "tile" else len(candidate) * max(self.intervals)

    def digest(self, candidate: Candidate, plan: Plan | None = None) -> str:
        """Identity of what runs: the plan digest (and, for the dpm variant, the order list); ``plan``: the
        candidate's compiled plan when the caller has it (not compiled again)."""
        plan = self.compile(candidate) if plan is None else plan
        if self.solver != "dpm":
            return plan.digest()
        text = " ".join(plan.tokens()) + "|" + ",".join(map(str, self.orders(candidate)))
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    # ---- cost -------------------------------------------------------------------------------------------------------
    def segment_cost(self, s: Segment, step_macs: Sequence[int]) -> int:
        """MACs of one segment from a cost model's ``step_macs`` (null, partial 1..B, full)."""
        full = step_macs[-1]
        part = full if (self.solver == "dpm" and s.branch == self.num_branches) else step_macs[s.branch]
        return full + (s.interval - 1) * part

    def avg_macs(self, candidate: Candidate, step_macs: Sequence[int]) -> float:
        """total MACs / T (the teacher's evaluations on its base grid), in the units of ``step_macs``."""
        return avg_macs(sum(self.segment_cost(s, step_macs) for s in candidate), self.grid)

    def plan_cost(self, step_macs: Sequence[int]) -> Callable[[Plan], float]:
        """``cost(plan) -> avg MACs`` over the teacher's grid T for plans of this space (any layout)."""
        by_kind = {"null": step_macs[0], "full": step_macs[-1]}

        def cost(plan: Plan) -> float:
            total = 0
            for st in plan.steps:
                total += step_macs[st.branch] if st.kind == "partial" else by_kind[st.kind]
            return avg_macs(total, self.grid)
        return cost

    # ---- sampling ---------------------------------------------------------------------------------------------------
    def random(self, rng: np.random.Generator) -> Candidate:
        """A uniform draw: N uniform over S, each segment's branch and interval uniform over B and I."""
        n = int(self.segments[rng.integers(len(self.segments))])
        b = rng.integers(len(self.branches), size=n)
        i = rng.integers(len(self.intervals), size=n)
        return Candidate(tuple(Segment(self.branches[x], self.intervals[y]) for x, y in zip(b, i)))

    def cheapest(self, step_macs: Sequence[int]) -> Candidate:
        n = min(self.segments)
        seg = min((Segment(b, i) for b in self.branches for i in self.intervals),
                  key=lambda s: (self.segment_cost(s, step_macs), s.branch, s.interval))
        return Candidate((seg,) * n)

    def dearest(self, step_macs: Sequence[int]) -> Candidate:
        n = max(self.segments)
        seg = max((Segment(b, i) for b in self.branches for i in self.intervals),
                  key=lambda s: (self.segment_cost(s, step_macs), s.branch, s.interval))
        return Candidate((seg,) * n)

    def nfe_range(self) -> tuple[int, int]:
        return min(self.segments) * min(self.intervals), max(self.segments) * max(self.intervals)

    # ---- counting ---------------------------------------------------------------------------------------------------
    def segment_choices(self, distinct: bool = False) -> list[Segment]:
        """Every (branch, interval) of a segment; ``distinct``: one per distinct compiled segment (interval 1 has no
        partial step, so its branch does not matter; in the dpm variant, neither does the branch of order 1)."""
        out = [Segment(b, i) for b in self.branches for i in self.intervals]
        if distinct and 1 in self.intervals:
            out = [s for s in out if s.interval != 1] + [Segment(self.branches[0], 1)]
        return out

    def count(self, distinct: bool = False) -> int:
        """Exact number of candidates: sum over N in S of (choices per segment) ** N (Sec. 4.1).

        ``distinct``: number of distinct compiled plans (different N never compile to the same plan: the full
        steps sit at the segment starts, except dpm segments of branch B, whose orders still differ)."""
        k = len(self.segment_choices(distinct))
        return sum(k ** n for n in self.segments)


def count_under_budget(space: SearchSpace, step_macs: Sequence[int], budget: float, *, distinct: bool = False,
                       max_work: int = 100_000_000) -> int | None:
    """Exact number of candidates with avg MACs <= ``budget`` (None when the count is too large to do here).

    A candidate's total MACs depends only on N and on how many partial steps it has at each branch (null steps are
    free), so the count is a polynomial power: the coefficients of ``g(x) ** N`` with
    ``g(x) = sum over segment choices of prod_b x_b ** (partials at b)``, kept as an exact integer array indexed by
    the partial counts per branch, then summed where the cost is within the budget.  ``max_work`` bounds
    (array cells x segment choices x max N).
    """
    choices = space.segment_choices(distinct)
    full = int(step_macs[-1])
    branches = list(space.branches)
    price = [full if (space.solver == "dpm" and b == space.num_branches) else int(step_macs[b]) for b in branches]
    top = max(space.intervals) - 1
    nmax = max(space.segments)
    shape = tuple(nmax * top + 1 for _ in branches)
    if int(np.prod(shape, dtype=object)) * len(choices) * nmax > max_work:
        return None
    limit = budget * space.grid
    poly = np.zeros(shape, dtype=object)
    poly[(0,) * len(shape)] = 1
    # cost of each cell (without the N full steps)
    grids = np.meshgrid(*[np.arange(n, dtype=np.int64) for n in shape], indexing="ij")
    partial_cost = sum(g * p for g, p in zip(grids, price))
    total = 0
    for n in range(1, nmax + 1):
        new = np.zeros(shape, dtype=object)
        for s in choices:
            k = s.interval - 1
            if k == 0:
                new += poly
                continue
            axis = branches.index(s.branch)
            src = [slice(None)] * len(shape)
            dst = [slice(None)] * len(shape)
            src[axis] = slice(0, shape[axis] - k)
            dst[axis] = slice(k, shape[axis])
            new[tuple(dst)] += poly[tuple(src)]
        poly = new
        if n in space.segments:
            within = (n * full + partial_cost) <= limit
            total += int(poly[within].sum()) if within.any() else 0
    return total
