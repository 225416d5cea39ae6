"""Algorithm 1 of Flexiffusion (segment-wise evolutionary search), seeded and replayable.

Input: a :class:`SearchSpace`, ``cost(plan) -> avg MACs`` (estimator C), the fitness F (lower is better: rFID by
default), the budget R, and :class:`EvolutionConfig`.  F is either a :class:`CandidateFitness`, which gets the search's
:class:`Proposal` s (candidate, compiled plan, digest, avg MACs: what the harness stores per evaluation), or a plain
callable ``evaluate(plans) -> fitness`` of the plans only (a toy or synthetic fitness).  Every candidate is compiled
and costed once per search (:class:`Proposer`); nothing downstream parses a plan back into its candidate.

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
class Proposal:
    """A candidate as the search hands it to its fitness: compiled once (``plan``), its identity (``digest``: what
    runs, :meth:`SearchSpace.digest`) and its avg MACs (``cost(plan)``, once)."""

    candidate: Candidate
    digest: str
    plan: Plan
    avg_macs: float


@dataclass(frozen=True)
class Evaluated(Proposal):
    """A proposal with its fitness."""

    fitness: float

    def order(self) -> tuple:
        return (self.fitness, self.digest)


class CandidateFitness:
    """A fitness that takes proposals: ``__call__(proposals) -> one value per proposal, in order`` (the harness's
    stored fitness subclasses it).  :func:`evolve` hands a plain callable the plans only."""

    def __call__(self, proposals: Sequence[Proposal]) -> Sequence[float]:
        raise NotImplementedError

    def observe(self, population: Sequence["Evaluated"]) -> None:
        """Called by :func:`evolve` before each round of evaluations with the population the new candidates will
        join (empty before the initial population).  A fitness that stops early on candidates that cannot matter
        (the search's fast mode, ``bench.search.screening``) reads it; by default it is ignored."""


def _by_plans(evaluate: Callable[[list[Plan]], Sequence[float]]) -> Callable[[Sequence[Proposal]], Sequence[float]]:
    if isinstance(evaluate, CandidateFitness):
        return evaluate
    return lambda proposals: evaluate([p.plan for p in proposals])


class Proposer:
    """``proposer(candidate) -> Proposal``: each candidate of a search compiled, identified and costed once."""

    def __init__(self, space: SearchSpace, cost: Callable[[Plan], float]):
        self.space, self.cost = space, cost
        self._seen: dict[Candidate, Proposal] = {}

    def __call__(self, candidate: Candidate) -> Proposal:
        p = self._seen.get(candidate)
        if p is None:
            plan = self.space.compile(candidate)
            p = self._seen[candidate] = Proposal(candidate, self.space.digest(candidate, plan), plan,
                                                 float(self.cost(plan)))
        return p

    def price(self, candidate: Candidate) -> float:
        return self(candidate).avg_macs


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
    """Fitness by digest; asks ``evaluate`` only for proposals never seen (batched)."""

    def __init__(self, evaluate: Callable[[Sequence[Proposal]], Sequence[float]], dedup: bool = True):
        self.evaluate, self.dedup = evaluate, dedup
        self.known: dict[str, Evaluated] = {}

    def get(self, proposals: list[Proposal]) -> tuple[list[Evaluated], int]:
        if not self.dedup:
            return self._get_all(proposals)
        todo: dict[str, Proposal] = {}
        for p in proposals:
            if p.digest not in self.known and p.digest not in todo:
                todo[p.digest] = p
        if todo:
            values = list(self.evaluate(list(todo.values())))
            if len(values) != len(todo):
                raise RuntimeError(f"evaluate returned {len(values)} values for {len(todo)} plans")
            for (d, p), v in zip(todo.items(), values):
                self.known[d] = Evaluated(p.candidate, d, p.plan, p.avg_macs, _fitness(v))
        return [self.known[p.digest] for p in proposals], len(todo)

    def _get_all(self, proposals: list[Proposal]) -> tuple[list[Evaluated], int]:
        """Algorithm 1 as written: every candidate evaluated, duplicates too.  An evaluation is deterministic, so a
        duplicate's value must equal the first one's (checked: the search's choices stay those of ``dedup``)."""
        values = list(self.evaluate(proposals)) if proposals else []
        for p, v in zip(proposals, values):
            d = p.digest
            if d in self.known and self.known[d].fitness != _fitness(v):
                raise RuntimeError(f"candidate {d} re-evaluated to {v}, first {self.known[d].fitness}: "
                                   "the evaluation is not deterministic")
            self.known.setdefault(d, Evaluated(p.candidate, d, p.plan, p.avg_macs, _fitness(v)))
        return [self.known[p.digest] for p in proposals], len(proposals)


def lighten(candidate: Candidate, space: SearchSpace, price: Callable[[Candidate], float], budget: float,
            rng: np.random.Generator) -> Candidate | None:
    """Make a random draw fit the budget: lower a random segment's interval (else its branch) by one choice until
    C <= R (``price(candidate)``: C of the candidate's plan); None when every segment is already at the lightest
    choices and it still does not fit."""
    segs = list(candidate.segments)
    while price(Candidate(tuple(segs))) > budget:
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


def initial_population(space: SearchSpace, price: Callable[[Candidate], float], budget: float, size: int,
                       max_tries: int, rng: np.random.Generator, digest: Callable[[Candidate], str] | None = None
                       ) -> list[Candidate]:
    """``size`` distinct random candidates under the budget: uniform draws (:meth:`SearchSpace.random`), each
    :func:`lighten`-ed until it fits; fewer if ``size * max_tries`` draws do not find ``size`` distinct ones."""
    out: dict[str, Candidate] = {}
    for _ in range(size * max_tries):
        if len(out) >= size:
            break
        c = lighten(space.random(rng), space, price, budget, rng)
        if c is not None:
            out.setdefault((digest or space.digest)(c), c)
    if not out:
        raise UserError(f"no random candidate under the budget {budget:.6g} in {size * max_tries} draws: raise the "
                        "budget or choose lighter N-segment/branch/interval choices")
    return list(out.values())


def evolve(space: SearchSpace, cost: Callable[[Plan], float],
           evaluate: CandidateFitness | Callable[[list[Plan]], Sequence[float]], budget: float,
           config: EvolutionConfig = EvolutionConfig(), *, progress: Callable[[dict], None] | None = None,
           dedup: bool = True) -> SearchResult:
    """Algorithm 1; ``evaluate``: a :class:`CandidateFitness` (gets proposals) or a callable of plans.
    ``progress(stats)`` is called after the initial population and after every iteration.  ``dedup=False``
    evaluates every child, even one identical to an earlier candidate (the naive baseline of the naive-vs-fast
    benchmark; same choices, same result)."""
    rng = np.random.Generator(np.random.PCG64(config.seed))
    propose = Proposer(space, cost)
    memo = _Memo(_by_plans(evaluate), dedup)
    history: list[dict] = []

    def report(iteration: int, population: list[Evaluated], children: int, new: int) -> None:
        stats = {"iteration": iteration, "best_fitness": population[0].fitness, "best_avg_macs":
                 population[0].avg_macs, "children": children, "new_evaluations": new,
                 "evaluations": len(memo.known), "population": len(population)}
        history.append(stats)
        if progress is not None:
            progress(stats)

    observe = evaluate.observe if isinstance(evaluate, CandidateFitness) else (lambda population: None)
    start = initial_population(space, propose.price, budget, config.initial, config.max_tries, rng,
                               lambda c: propose(c).digest)
    observe([])
    evaluated, new = memo.get([propose(c) for c in start])
    population = sorted({e.digest: e for e in evaluated}.values(), key=Evaluated.order)[:config.population]
    report(0, population, 0, new)
    for it in range(1, config.iterations + 1):
        k = min(config.parents, len(population))
        picks = rng.choice(len(population), size=k, replace=False)
        best = min((population[int(i)] for i in picks), key=Evaluated.order)
        children: list[Proposal] = []
        for _ in range(config.max_tries):
            if len(children) >= config.children:
                break
            child = propose(mutate(best.candidate, space, rng, config.n_m))
            if child.avg_macs <= budget:
                children.append(child)
        observe(population)
        evaluated, new = memo.get(children)
        merged = {e.digest: e for e in population}
        merged.update({e.digest: e for e in evaluated})
        population = sorted(merged.values(), key=Evaluated.order)[:config.population]
        report(it, population, len(children), new)
    return SearchResult(population, dict(memo.known), history)
