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

from flexiffusion.errors import UserError
from flexiffusion.schedule import Plan
from flexiffusion.schedulers import make_scheduler_for_grid, make_segment_dpm
from flexiffusion.search.space import SearchSpace

from .driver import Backend, candidate_of


def _grid_scheduler(name, config, length, device=None):
    return make_scheduler_for_grid(name, config, length, device=device)


def _dpm_scheduler(orders, config, length, device=None):
    return make_segment_dpm(config, orders, device=device)


def plan_extras(plan: Plan, space: SearchSpace, scheduler: str):
    """The evaluator's :class:`PlanExtras` for a plan of ``space`` (None for tile plans on the teacher's grid)."""
    from bench.evaluation.evaluator import PlanExtras

    if space.solver == "dpm":
        orders = tuple(space.orders(candidate_of(plan)))
        return PlanExtras(f"dpm:{','.join(map(str, orders))}", functools.partial(_dpm_scheduler, orders))
    if space.layout == "compact":
        return PlanExtras(f"compact:{len(plan)}", functools.partial(_grid_scheduler, scheduler))
    return None


def evaluator_backend(setting, space: SearchSpace, *, cache_dir=None, progress: bool = False) -> Backend:
    """A :class:`Backend` over a local Evaluator (prefix reuse with states keeping the space's branches)."""
    try:
        from bench.evaluation.evaluator import Evaluator
    except ImportError as exc:  # pragma: no cover - the evaluation package is part of the suite
        raise UserError(f"the search's fitness needs bench.evaluation ({exc})") from None
    evaluator: list = []

    def get():
        if not evaluator:
            evaluator.append(Evaluator(setting, cache_branches=space.branches, cache_dir=cache_dir,
                                       progress=progress).prepare())
        return evaluator[0]

    def rows(plans: Sequence[Plan], sp: SearchSpace) -> list[dict]:
        return get().evaluate(list(plans), [plan_extras(p, sp, setting.scheduler) for p in plans])

    fields = {"model": setting.model, "weights": setting.weights, "scheduler": setting.scheduler,
              "n_images": setting.n_images, "seeds": f"{setting.seeds[0]}-{setting.seeds[-1]}"
              if list(setting.seeds) == list(range(setting.seeds[0], setting.seeds[-1] + 1)) else str(setting.seeds)}
    backend = Backend(setting.key(), rows, setting.to_dict(), fields)
    backend.prepare = get
    return backend
