"""Search space (tile / compact / dpm), exact counts vs brute force, Algorithm 2, Algorithm 1 determinism."""
import itertools

import numpy as np
import pytest

from flexiffusion.errors import UserError
from flexiffusion.search.evolution import EvolutionConfig, evolve
from flexiffusion.search.mutation import mutate
from flexiffusion.search.space import Candidate, SearchSpace, Segment, count_under_budget

from search_fitness import toy_evaluate

# MACs per step type of a fictitious 4-branch U-Net: null, partial 1..4, full.
MACS = (0, 9, 23, 41, 80, 100)


def space(**kw):
    base = dict(segments=(2, 3), branches=(1, 3), intervals=(1, 2), num_branches=4, grid=12)
    base.update(kw)
    return SearchSpace(**base)


def test_tile_compile_segments_tile_the_base_grid():
    sp = space(segments=(5,), branches=(1, 2, 3), intervals=(1, 2, 3), grid=16)
    c = Candidate.of([(1, 2), (2, 1), (3, 3), (1, 1), (2, 2)])
    plan = sp.compile(c)
    assert sp.bounds(5) == [0, 3, 6, 10, 13, 16]    # floor(j * 16 / 5 + 1/2)
    assert plan.tokens() == ["f", "p1", "n", "f", "n", "n", "f", "p3", "p3", "n", "f", "n", "n", "f", "p2", "n"]
    assert len(plan) == 16 and plan.nfe == 2 + 1 + 3 + 1 + 2
    assert sp.grid_length(c) == 16


def test_compact_compile_is_n_times_max_interval():
    sp = space(layout="compact", intervals=(1, 3))
    c = Candidate.of([(1, 3), (3, 1), (1, 1)])
    plan = sp.compile(c)
    assert plan.tokens() == ["f", "p1", "p1", "f", "n", "n", "f", "n", "n"]
    assert sp.grid_length(c) == 9
    # avg MACs always over the teacher's grid T = 12
    assert sp.plan_cost(MACS)(plan) == pytest.approx((100 + 2 * 9 + 100 + 100) / 12)
    assert sp.avg_macs(c, MACS) == pytest.approx(sp.plan_cost(MACS)(plan))


def test_dpm_variant_orders_and_full_branch():
    sp = space(solver="dpm", segments=(3, 4), branches=(1, 4), intervals=(1, 2, 3))
    c = Candidate.of([(1, 3), (4, 2), (1, 1)])
    plan = sp.compile(c)
    assert plan.tokens() == ["f", "p1", "p1", "f", "f", "f"]      # branch 4 = B: "full"
    assert sp.orders(c) == [3, 2, 1] and sp.grid_length(c) == 6
    assert sp.avg_macs(c, MACS) == pytest.approx((100 + 18 + 200 + 100) / 12)
    # same steps, other orders: other identity
    other = Candidate.of([(1, 3), (4, 1), (4, 1), (1, 1)])
    assert sp.compile(other).tokens() == plan.tokens() and sp.digest(other) != sp.digest(c)


def _brute(sp, budget, distinct):
    seen, n = set(), 0
    for k in sp.segments:
        for segs in itertools.product(sp.segment_choices(), repeat=k):
            c = Candidate(segs)
            if budget is not None and sp.avg_macs(c, MACS) > budget:
                continue
            n += 1
            seen.add(sp.digest(c))
    return len(seen) if distinct else n


@pytest.mark.parametrize("kw", [{}, {"layout": "compact"}, {"solver": "dpm", "branches": (2, 4), "intervals": (1, 3)},
                                {"segments": (1, 2, 4), "branches": (1, 2, 3), "intervals": (1, 2, 3), "grid": 12}])
@pytest.mark.parametrize("budget", [None, 60.0, 31.0])
def test_counts_equal_brute_force(kw, budget):
    sp = space(**kw)
    for distinct in (False, True):
        expected = _brute(sp, budget, distinct)
        got = sp.count(distinct) if budget is None else count_under_budget(sp, MACS, budget, distinct=distinct)
        assert got == expected, (kw, budget, distinct)
    assert sp.count() == sum((len(sp.branches) * len(sp.intervals)) ** n for n in sp.segments)


def test_count_under_budget_gives_up_on_huge_spaces():
    sp = SearchSpace((59, 60, 61), (1, 3, 6), (2, 3), 12, 250)
    assert count_under_budget(sp, (0,) + tuple(range(1, 13)) + (100,), 40, max_work=10_000) is None
    assert sp.count() == 6 ** 59 + 6 ** 60 + 6 ** 61


@pytest.mark.parametrize("kw,match", [
    ({"branches": ()}, "empty branch choice list"),
    ({"branches": (1, 5)}, "branch choice 5 out of range.*1..4"),
    ({"intervals": (0, 1)}, "interval choice 0 out of range"),
    ({"segments": ()}, "empty N-segment"),
    ({"intervals": (1, 7)}, "interval 7 does not fit: 3 segments"),
    ({"layout": "spiral"}, "unknown layout"),
    ({"solver": "dpm", "intervals": (1, 4)}, "DPM-Solver order"),
])
def test_bad_spaces(kw, match):
    with pytest.raises(UserError, match=match):
        space(**kw)


def test_candidate_outside_space_and_key_round_trip():
    sp = space()
    c = Candidate.of([(1, 2), (3, 1)])
    assert Candidate.from_key(c.key()) == c and c.key() == "1.2 3.1"
    with pytest.raises(UserError, match="outside the space"):
        sp.compile(Candidate.of([(2, 2), (3, 1)]))
    with pytest.raises(UserError, match="segments, not one of"):
        sp.compile(Candidate.of([(1, 1)] * 4))
    with pytest.raises(UserError, match="malformed candidate"):
        Candidate.from_key("1-2")


def _diff(parent, child):
    return sum(a != b for a, b in zip(parent.segments, child.segments))


def test_mutation_stays_in_space_and_moves_one_choice():
    sp = SearchSpace((4, 5, 6), (1, 2, 3), (1, 2, 3), 4, 30)
    rng = np.random.Generator(np.random.PCG64(1))
    parent = Candidate.of([(2, 2)] * 5)
    lengths = set()
    for _ in range(400):
        child = mutate(parent, sp, rng, n_m=1)
        sp.check(child)
        lengths.add(len(child))
        if len(child) == len(parent):
            assert _diff(parent, child) <= 1
            for a, b in zip(parent, child):
                assert abs(a.branch - b.branch) + abs(a.interval - b.interval) <= 1
        else:  # split or merge by one: the other segments unchanged
            assert set(child.segments) == {Segment(2, 2)}
    assert lengths == {4, 5, 6}


def test_mutation_edges_split_merge_and_n_m():
    sp = SearchSpace((2, 3, 4), (1, 2), (1, 2), 2, 8, layout="compact")
    rng = np.random.Generator(np.random.PCG64(3))
    parent = Candidate.of([(1, 1), (2, 2), (1, 2)])
    seen = set()
    for _ in range(300):
        child = mutate(parent, sp, rng, n_m=3)
        sp.check(child)
        seen.add(child.key())
        # compact: the plan of an untouched prefix is unchanged
    assert "1.1 2.2 1.2 1.2" in seen or "1.1 2.2 2.2 1.2" in seen   # splits copy the chosen segment
    assert any(len(Candidate.from_key(k)) == 2 for k in seen)      # merges
    # n_m larger than N is capped, and the same rng state gives the same child
    a = mutate(parent, sp, np.random.Generator(np.random.PCG64(9)), n_m=10)
    b = mutate(parent, sp, np.random.Generator(np.random.PCG64(9)), n_m=10)
    assert a == b


def _search(seed, **kw):
    sp = SearchSpace((6, 7, 8), (1, 2, 3), (1, 2, 3), 4, 32)
    cfg = EvolutionConfig(iterations=12, parents=6, children=4, population=20, initial=10, max_tries=50, seed=seed,
                          **kw)
    calls = []

    def evaluate(plans):
        calls.extend(p.digest() for p in plans)
        return toy_evaluate(plans)
    return evolve(sp, sp.plan_cost(MACS), evaluate, 45.0, cfg), calls


def test_search_is_deterministic_for_a_seed_and_never_reevaluates():
    r1, c1 = _search(0)
    r2, c2 = _search(0)
    r3, _ = _search(1)
    assert [e.digest for e in r1.population] == [e.digest for e in r2.population] and c1 == c2
    assert [e.digest for e in r1.population] != [e.digest for e in r3.population]
    assert len(c1) == len(set(c1)) == len(r1.evaluated)
    assert all(e.avg_macs <= 45.0 for e in r1.evaluated.values())
    # the search improves on its initial population, the population is sorted and the Pareto set is monotone
    assert r1.history[-1]["best_fitness"] < r1.history[0]["best_fitness"]
    fit = [e.fitness for e in r1.population]
    assert fit == sorted(fit) and r1.best.fitness == min(e.fitness for e in r1.evaluated.values())
    par = r1.pareto()
    assert [e.avg_macs for e in par] == sorted(e.avg_macs for e in par)
    assert all(a.fitness > b.fitness for a, b in zip(par, par[1:]))
    assert par[-1].fitness == r1.best.fitness


def test_budget_below_every_candidate():
    sp = SearchSpace((6,), (1,), (1,), 4, 32)
    with pytest.raises(UserError, match="no random candidate under the budget"):
        evolve(sp, sp.plan_cost(MACS), toy_evaluate, 1.0, EvolutionConfig(iterations=1, initial=2, max_tries=3))


def test_the_fitness_gets_candidates_each_compiled_and_costed_once(monkeypatch):
    """A CandidateFitness gets proposals (candidate, its compiled plan, digest, avg MACs), so nothing parses a plan
    back into its candidate; every candidate of the search is compiled and costed once; the result is the one a
    fitness of plans gets."""
    from collections import Counter

    from flexiffusion.search.evolution import CandidateFitness

    sp = SearchSpace((6, 7, 8), (1, 2, 3), (1, 2, 3), 4, 32)
    cfg = EvolutionConfig(iterations=12, parents=6, children=4, population=20, initial=10, max_tries=50, seed=0)
    expected = evolve(sp, sp.plan_cost(MACS), toy_evaluate, 45.0, cfg)
    compiled, costed = Counter(), Counter()
    real_compile = SearchSpace.compile

    def compile(self, c):
        compiled[c] += 1
        return real_compile(self, c)

    monkeypatch.setattr(SearchSpace, "compile", compile)
    cost = sp.plan_cost(MACS)

    def counted_cost(plan):
        costed[plan.name] += 1
        return cost(plan)

    class Recording(CandidateFitness):
        def __init__(self):
            self.seen = []

        def __call__(self, proposals):
            self.seen += proposals
            return toy_evaluate([p.plan for p in proposals])

    fitness = Recording()
    result = evolve(sp, counted_cost, fitness, 45.0, cfg)
    assert max(compiled.values()) == 1 and max(costed.values()) == 1
    assert all(p.plan == real_compile(sp, p.candidate) and p.digest == sp.digest(p.candidate)
               and p.avg_macs == cost(p.plan) for p in fitness.seen)
    assert [e.digest for e in result.population] == [e.digest for e in expected.population]
    assert {d: e.fitness for d, e in result.evaluated.items()} == {d: e.fitness for d, e in expected.evaluated.items()}
