"""Algorithm 1 without dedup (the naive arm of the search benchmark): every child evaluated, same search."""
from __future__ import annotations

import pytest

from flexiffusion.search.evolution import EvolutionConfig, evolve
from flexiffusion.search.space import SearchSpace

from test_search_space import MACS, toy_evaluate


def _run(dedup, evaluate=toy_evaluate):
    sp = SearchSpace((6, 7, 8), (1, 2, 3), (1, 2, 3), 4, 32)
    cfg = EvolutionConfig(iterations=12, parents=6, children=4, population=20, initial=10, max_tries=50, seed=3,
                          n_m=1)
    calls = []

    def counted(plans):
        calls.extend(p.digest() for p in plans)
        return evaluate(plans)
    return evolve(sp, sp.plan_cost(MACS), counted, 45.0, cfg, dedup=dedup), calls


def test_naive_evaluates_duplicates_and_ends_identically():
    fast, fast_calls = _run(True)
    naive, naive_calls = _run(False)
    assert len(fast_calls) == len(set(fast_calls)) and set(naive_calls) == set(fast_calls)
    assert len(naive_calls) > len(fast_calls)  # n_m = 1 makes duplicate children
    assert [e.digest for e in naive.population] == [e.digest for e in fast.population]
    assert {d: e.fitness for d, e in naive.evaluated.items()} == {d: e.fitness for d, e in fast.evaluated.items()}


def test_naive_refuses_a_nondeterministic_evaluation():
    counter = iter(range(10 ** 6))

    def noisy(plans):
        return [v + next(counter) * 1e-9 for v in toy_evaluate(plans)]

    with pytest.raises(RuntimeError, match="not deterministic"):
        _run(False, noisy)


def test_search_bench_takes_algorithm_1_settings(capsys):
    from bench.cli import main
    from bench.search.benchmark import BenchCase, _search_parts

    config = _search_parts(BenchCase(parents=25, children=4, population=300, n_m=1, initial=9))[4]
    assert (config.parents, config.children, config.population, config.n_m, config.initial) == (25, 4, 300, 1, 9)
    default = _search_parts(BenchCase())[4]
    assert (default.parents, default.population) == (8, 100)  # the embedded preset's
    assert main(["search-bench", "--parents", "0"]) == 2
    assert "--population >= 1" in capsys.readouterr().err
