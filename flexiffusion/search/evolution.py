"""Algorithm 1 of Flexiffusion (segment-wise evolutionary search), seeded and replayable.

Input: a :class:`SearchSpace`, ``cost(plan) -> avg MACs`` (estimator C), ``evaluate(plans) -> fitness`` (estimator
F, lower is better: rFID by default), the budget R, and :class:`EvolutionConfig`.

1. Initial population: ``initial`` distinct random candidates with C <= R (uniform draws, each made lighter one
   segment at a time until it fits: :func:`lighten`); the paper gives neither its size nor how; we use 50 = 2 n_p.
2. Each iteration: sample ``n_p`` parents at random from the population, take the best x* by fitness, mutate x*
   (Algorithm 2) until ``n_c`` children with C <= R are made or ``max_tries`` mutations were tried, evaluate the
   children, P <- P u P_c (a set: a candidate is in the population once) and keep the top ``n_u``.

A child identical to an earlier candidate (same compiled plan) counts as a child as in the paper, but is never
evaluated again: fitness values are memoised by the candidate's digest.  "Under the budget" is ``C <= R`` (Table 5:
the budget is the maximum avg MACs).  Ties in fitness are broken by the digest, so the order is total.

All random choices come from one ``numpy.random.Generator(PCG64(seed))`` and depend only on the seed, the costs and
the fitness values, never on timing.  So a rerun whose ``evaluate`` returns the stored values of the evaluations a
killed run had completed replays the killed run's choices exactly and ends with the identical result (the driver's
kill -9 resume).
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Callable, Sequence

import numpy as np

from ..errors import UserError
from ..schedule import Plan
from .mutation import DEFAULT_N_M, mutate
from .space import Candidate, SearchSpace, Segment


@dataclass(frozen=True)
class EvolutionConfig:
    """Algorithm 1's settings; defaults from appendix B.2 (``initial`` and ``n_m`` are ours, see docs/search.md)."""

    iterations: int = 100
    parents: int = 25        # n_p
    children: int = 5        # n_c
    population: int = 300    # n_u
    max_tries: int = 200
    initial: int = 50
    n_m: int = DEFAULT_N_M
    seed: int = 0

    def __post_init__(self):
        for name in ("iterations", "max_tries", "initial", "parents", "children", "population", "n_m"):
            low = 0 if name == "iterations" else 1
            if int(getattr(self, name)) < low:
                raise UserError(f"search setting {name} must be >= {low}, got {getattr(self, name)}")

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class Evaluated:
    """A candidate with its compiled plan, avg MACs and fitness."""

    candidate: Candidate
    digest: str
    plan: Plan
    avg_macs: float
    fitness: float

    def order(self) -> tuple:
        return (self.fitness, self.digest)


@dataclass
class SearchResult:
    population: list[Evaluated]             # final population, best first
    evaluated: dict[str, Evaluated]         # every candidate evaluated, by digest
    history: list[dict] = field(default_factory=list)  # per iteration: best fitness, children, new evaluations

    @property
    def best(self) -> Evaluated:
        return self.population[0]

    def pareto(self) -> list[Evaluated]:
        """Candidates not dominated in (avg MACs, fitness) among all evaluated, cheapest first."""
        out: list[Evaluated] = []
        for e in sorted(self.evaluated.values(), key=lambda e: (e.avg_macs, e.fitness, e.digest)):
            if not out or e.fitness < out[-1].fitness:
                out.append(e)
        return out


def _fitness(value) -> float:
    value = float(value)
    return math.inf if math.isnan(value) else value


class _Memo:
    """Fitness by digest; asks ``evaluate`` only for plans never seen (batched)."""

    def __init__(self, space: SearchSpace, cost: Callable[[Plan], float],
                 evaluate: Callable[[list[Plan]], Sequence[float]], dedup: bool = True):
        self.space, self.cost, self.evaluate, self.dedup = space, cost, evaluate, dedup
        self.known: dict[str, Evaluated] = {}

    def get(self, candidates: list[Candidate]) -> tuple[list[Evaluated], int]:
        if not self.dedup:
            return self._get_all(candidates)
        todo: dict[str, tuple[Candidate, Plan]] = {}
        for c in candidates:
            d = self.space.digest(c)
            if d not in self.known and d not in todo:
                todo[d] = (c, self.space.compile(c))
        if todo:
            values = list(self.evaluate([p for _, p in todo.values()]))
            if len(values) != len(todo):
                raise RuntimeError(f"evaluate returned {len(values)} values for {len(todo)} plans")
            for (d, (c, p)), v in zip(todo.items(), values):
                self.known[d] = Evaluated(c, d, p, float(self.cost(p)), _fitness(v))
        return [self.known[self.space.digest(c)] for c in candidates], len(todo)

    def _get_all(self, candidates: list[Candidate]) -> tuple[list[Evaluated], int]:
        """Algorithm 1 as written: every candidate evaluated, duplicates too.  An evaluation is deterministic, so a
        duplicate's value must equal the first one's (checked: the search's choices stay those of ``dedup``)."""
        plans = [self.space.compile(c) for c in candidates]
        values = list(self.evaluate(plans)) if plans else []
        for c, p, v in zip(candidates, plans, values):
            d = self.space.digest(c)
            if d in self.known and self.known[d].fitness != _fitness(v):
                raise RuntimeError(f"candidate {d} re-evaluated to {v}, first {self.known[d].fitness}: "
                                   "the evaluation is not deterministic")
            self.known.setdefault(d, Evaluated(c, d, p, float(self.cost(p)), _fitness(v)))
        return [self.known[self.space.digest(c)] for c in candidates], len(plans)


def lighten(candidate: Candidate, space: SearchSpace, cost: Callable[[Plan], float], budget: float,
            rng: np.random.Generator) -> Candidate | None:
    """Make a random draw fit the budget: lower a random segment's interval (else its branch) by one choice until
    C <= R; None when every segment is already at the lightest choices and it still does not fit."""
    segs = list(candidate.segments)
    while cost(space.compile(Candidate(tuple(segs)))) > budget:
        heavy = [j for j, s in enumerate(segs) if s.interval > space.intervals[0] or s.branch > space.branches[0]]
        if not heavy:
            return None
        j = heavy[int(rng.integers(len(heavy)))]
        s = segs[j]
        if s.interval > space.intervals[0]:
            segs[j] = Segment(s.branch, space.intervals[space.intervals.index(s.interval) - 1])
        else:
            segs[j] = Segment(space.branches[space.branches.index(s.branch) - 1], s.interval)
    return Candidate(tuple(segs))


def initial_population(space: SearchSpace, cost: Callable[[Plan], float], budget: float, size: int,
                       max_tries: int, rng: np.random.Generator) -> list[Candidate]:
    """``size`` distinct random candidates under the budget: uniform draws (:meth:`SearchSpace.random`), each
    :func:`lighten`-ed until it fits; fewer if ``size * max_tries`` draws do not find ``size`` distinct ones."""
    out: dict[str, Candidate] = {}
    for _ in range(size * max_tries):
        if len(out) >= size:
            break
        c = lighten(space.random(rng), space, cost, budget, rng)
        if c is not None:
            out.setdefault(space.digest(c), c)
    if not out:
        raise UserError(f"no random candidate under the budget {budget:.6g} in {size * max_tries} draws: raise the "
                        "budget or choose lighter N-segment/branch/interval choices")
    return list(out.values())


def evolve(space: SearchSpace, cost: Callable[[Plan], float], evaluate: Callable[[list[Plan]], Sequence[float]],
           budget: float, config: EvolutionConfig = EvolutionConfig(), *,
           progress: Callable[[dict], None] | None = None, dedup: bool = True) -> SearchResult:
    """Algorithm 1; ``progress(stats)`` is called after the initial population and after every iteration.
    ``dedup=False`` evaluates every child, even one identical to an earlier candidate (the naive baseline of the
    naive-vs-fast benchmark; same choices, same result)."""
    rng = np.random.Generator(np.random.PCG64(config.seed))
    memo = _Memo(space, cost, evaluate, dedup)
    history: list[dict] = []

    def report(iteration: int, population: list[Evaluated], children: int, new: int) -> None:
        stats = {"iteration": iteration, "best_fitness": population[0].fitness, "best_avg_macs":
                 population[0].avg_macs, "children": children, "new_evaluations": new,
                 "evaluations": len(memo.known), "population": len(population)}
        history.append(stats)
        if progress is not None:
            progress(stats)

    start = initial_population(space, cost, budget, config.initial, config.max_tries, rng)
    evaluated, new = memo.get(start)
    population = sorted({e.digest: e for e in evaluated}.values(), key=Evaluated.order)[:config.population]
    report(0, population, 0, new)
    for it in range(1, config.iterations + 1):
        k = min(config.parents, len(population))
        picks = rng.choice(len(population), size=k, replace=False)
        best = min((population[int(i)] for i in picks), key=Evaluated.order)
        children: list[Candidate] = []
        for _ in range(config.max_tries):
            if len(children) >= config.children:
                break
            child = mutate(best.candidate, space, rng, config.n_m)
            if cost(space.compile(child)) <= budget:
                children.append(child)
        evaluated, new = memo.get(children)
        merged = {e.digest: e for e in population}
        merged.update({e.digest: e for e in evaluated})
        population = sorted(merged.values(), key=Evaluated.order)[:config.population]
        report(it, population, len(children), new)
    return SearchResult(population, dict(memo.known), history)
