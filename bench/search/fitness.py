"""Fitness backends of the search driver: engineer B's :class:`bench.evaluation.evaluator.Evaluator` (rFID against
the teacher by default, FID against real data, pixel MSE against the teacher), run in this process.

Per plan the evaluator gets the extras its layout needs: ``tile`` plans run on the teacher's grid as they are;
``compact`` plans on a grid of their own length (the setting's scheduler rebuilt for it); the DPM-Solver variant's
on a single-step DPM-Solver with the candidate's order list.  The extras' tag keeps prefix reuse within plans of
one grid.
"""
from __future__ import annotations

import functools
from typing import Sequence

from flexiffusion.schedule import Plan
from flexiffusion.schedulers import make_scheduler_for_grid, make_segment_dpm
from flexiffusion.search.evolution import Proposal
from flexiffusion.search.space import Candidate, SearchSpace

from .driver import Backend


def _grid_scheduler(name, config, length, device=None):
    return make_scheduler_for_grid(name, config, length, device=device)


def _dpm_scheduler(orders, config, length, device=None):
    return make_segment_dpm(config, orders, device=device)


def plan_extras(candidate: Candidate, plan: Plan, space: SearchSpace, scheduler: str):
    """The evaluator's :class:`PlanExtras` for ``candidate`` of ``space`` compiled to ``plan`` (None for tile plans
    on the teacher's grid)."""
    from bench.evaluation.evaluator import PlanExtras

    if space.solver == "dpm":
        orders = tuple(space.orders(candidate))
        return PlanExtras(f"dpm:{','.join(map(str, orders))}", functools.partial(_dpm_scheduler, orders))
    if space.layout == "compact":
        return PlanExtras(f"compact:{len(plan)}", functools.partial(_grid_scheduler, scheduler))
    return None


def fast_key(setting, screen) -> str:
    """The evaluation key of the fast mode's (screened) evaluations: the exact setting's key and the screening
    config, so they never mix with exact evaluations in the store."""
    from bench.cache import stable_hash

    return stable_hash({"evaluation": setting.key(), "profile": "fast", "screen": screen.to_dict()})


def screening_backend(setting, space: SearchSpace, screen, n_p: int, *, cache_dir=None) -> Backend:
    """The fast mode's :class:`Backend`: each proposal evaluated in stages of images (:mod:`.screening`), stopped
    when it cannot matter to Algorithm 1; this process only (the stages follow the population round by round)."""
    from bench.evaluation.evaluator import Evaluator

    from .screening import Screening

    key = fast_key(setting, screen)
    holder: list = []

    def get():
        if not holder:
            ev = Evaluator(setting, cache_branches=space.branches, cache_dir=cache_dir).prepare()
            holder.append(Screening(ev, screen, n_p, key, cache_dir=cache_dir))
        return holder[0]

    def rows(proposals: Sequence[Proposal], sp: SearchSpace) -> list[dict]:
        sc = get()
        return [sc.evaluate_one(p.plan, p.digest, plan_extras(p.candidate, p.plan, sp, setting.scheduler))
                for p in proposals]

    backend = Backend(key, rows, {**setting.to_dict(), "profile": "fast", "screen": screen.to_dict()}, _fields(setting),
                      batch=1, observe=lambda population: get().observe(population))
    backend.prepare = get
    backend.close = lambda: None
    backend.note = lambda digest: get().note(digest)
    return backend


def _fields(setting) -> dict:
    seeds = list(setting.seeds)
    return {"model": setting.model, "weights": setting.weights, "scheduler": setting.scheduler,
            "n_images": setting.n_images,
            "seeds": f"{seeds[0]}-{seeds[-1]}" if seeds == list(range(seeds[0], seeds[-1] + 1)) else str(seeds),
            **setting.provenance()}  # the device and threads the evaluations run with, not the process default


def evaluator_backend(setting, space: SearchSpace, *, executor: str = "local", cache_dir=None,
                      actors: int = 2, address: str | None = None) -> Backend:
    """A :class:`Backend` over an executor (:mod:`bench.evaluation.executors`) built on first use; states for prefix
    reuse keep the space's branches.  ``local`` evaluates one proposal per call, so each evaluation is committed the
    moment it completes; ``ray`` evaluates an iteration's new plans in parallel and commits each batch when it
    returns (a kill loses at most the batch in flight)."""
    from bench.evaluation.executors import make_executor

    holder: list = []

    def get():
        if not holder:
            kwargs = {"cache_branches": space.branches, "cache_dir": cache_dir}
            if executor == "ray":
                kwargs.update(actors=actors, address=address)
            ex = make_executor(executor, setting, **kwargs)
            if executor == "local":
                ex.evaluator  # model, teacher and its statistics now, not at the first candidate
            holder.append(ex)
        return holder[0]

    def rows(proposals: Sequence[Proposal], sp: SearchSpace) -> list[dict]:
        return get().map([p.plan for p in proposals],
                         [plan_extras(p.candidate, p.plan, sp, setting.scheduler) for p in proposals])

    backend = Backend(setting.key(), rows, setting.to_dict(), _fields(setting),
                      batch=1 if executor == "local" else 1 << 30)
    backend.prepare = get
    backend.close = lambda: holder and holder[0].close()
    return backend
