"""Registry of diffusers schedulers that the sampler loop runs: DDIM, PLMS (PNDM with skip_prk_steps), DPM-Solver
multistep of orders 1-3 (``dpm1``-``dpm3``; order k reuses the outputs of the k - 1 previous steps) and DPM-Solver
singlestep of orders 1-3 (Lu et al. 2022), in two forms: ``dpm-singlestep1``-``3`` as diffusers configures it
(final sigma zero, lower-order final steps; the baselines' rows) and ``dpms1``-``3`` ending at sigma_min so that
every run [1, 2, .., k] of the order list is a true k-th order interval of k evaluations (Flexiffusion's DPM-Solver
search space, appendix E.2, with a per-segment order list: :func:`make_segment_dpm`)."""
from __future__ import annotations

import inspect
from typing import Callable

from diffusers import DDIMScheduler, DPMSolverMultistepScheduler, DPMSolverSinglestepScheduler, PNDMScheduler
from diffusers.schedulers.scheduling_utils import SchedulerMixin

from .errors import UserError

SCHEDULERS: dict[str, Callable[[dict], SchedulerMixin]] = {}


def register_scheduler(name: str):
    def deco(fn):
        if name in SCHEDULERS:
            raise ValueError(f"scheduler {name!r} registered twice")
        SCHEDULERS[name] = fn
        return fn
    return deco


@register_scheduler("ddim")
def _ddim(config):
    return DDIMScheduler.from_config(config)


@register_scheduler("plms")
def _plms(config):
    return PNDMScheduler.from_config(config, skip_prk_steps=True)


for _order in (1, 2, 3):
    register_scheduler(f"dpm{_order}")(
        lambda config, _o=_order: DPMSolverMultistepScheduler.from_config(config, solver_order=_o))
    register_scheduler(f"dpm-singlestep{_order}")(
        lambda config, _o=_order: DPMSolverSinglestepScheduler.from_config(config, solver_order=_o,
                                                                            lower_order_final=True))


class SegmentOrderDPMSolver(DPMSolverSinglestepScheduler):
    """DPM-Solver single-step with one solver order per segment: orders [2, 3, 1] run the grid's steps as
    [1, 2] [1, 2, 3] [1] -- a run 1..k is one k-th order interval of k model evaluations.

    diffusers' ``set_timesteps`` overwrites ``order_list`` with ``get_order_list(n)``, so the segment orders enter
    through that method.  With ``final_sigmas_type="zero"`` diffusers forces the last step to order 1; so do we.
    """

    segment_orders: tuple[int, ...] | None = None

    def get_order_list(self, num_inference_steps: int) -> list[int]:
        if self.segment_orders is None:
            return super().get_order_list(num_inference_steps)
        orders = [j for k in self.segment_orders for j in range(1, k + 1)]
        if len(orders) != num_inference_steps:
            raise UserError(f"segment orders {list(self.segment_orders)} need {len(orders)} steps, the grid has "
                            f"{num_inference_steps}")
        if self.config.final_sigmas_type == "zero":
            orders[-1] = 1
        return orders


# Single-step DPM-Solver ends at sigma_min so that every segment is a true k-th order interval (with "zero" the last
# step must be first order).
SINGLESTEP = {"final_sigmas_type": "sigma_min", "lower_order_final": False}

for _order in (1, 2, 3):
    register_scheduler(f"dpms{_order}")(
        lambda config, _o=_order: DPMSolverSinglestepScheduler.from_config(config, solver_order=_o, **SINGLESTEP))


def make_segment_dpm(config: dict, orders, device=None) -> SegmentOrderDPMSolver:
    """A single-step DPM-Solver whose grid of ``sum(orders)`` steps runs segment j at order ``orders[j]``."""
    orders = tuple(int(k) for k in orders)
    if not orders or any(k not in (1, 2, 3) for k in orders):
        raise UserError(f"DPM-Solver segment orders must be 1, 2 or 3, got {list(orders)}")
    scheduler = SegmentOrderDPMSolver.from_config(dict(config), solver_order=max(orders), **SINGLESTEP)
    scheduler.segment_orders = orders
    scheduler.set_timesteps(sum(orders), device=device)
    return scheduler


# PLMS (PNDM with skip_prk_steps) evaluates the model once more than its number of inference steps: its grid
# repeats one timestep to bootstrap the linear multistep history.
EXTRA_GRID_STEPS = {"plms": 1}


def grid_length(name: str, num_inference_steps: int) -> int:
    """Length of the timestep grid (= plan length) of scheduler ``name`` at ``num_inference_steps``."""
    return num_inference_steps + EXTRA_GRID_STEPS.get(name, 0)


def make_scheduler_for_grid(name: str, config: dict, length: int, device=None) -> SchedulerMixin:
    """A fresh scheduler whose grid has ``length`` timesteps (the length of the plan it will run)."""
    return make_scheduler(name, config, length - EXTRA_GRID_STEPS.get(name, 0), device)


def make_scheduler(name: str, config: dict, num_inference_steps: int, device=None) -> SchedulerMixin:
    """A fresh scheduler ``name`` built from a model's scheduler ``config`` with its grid set
    (``len(scheduler.timesteps) == grid_length(name, num_inference_steps)``)."""
    if name not in SCHEDULERS:
        raise UserError(f"unknown scheduler {name!r}: choose one of {', '.join(sorted(SCHEDULERS))}")
    if num_inference_steps < 1:
        raise UserError(f"number of inference steps must be >= 1, got {num_inference_steps}")
    train = int(config.get("num_train_timesteps", 1000))
    if num_inference_steps > train:
        raise UserError(f"{num_inference_steps} inference steps exceed the model's training grid of {train} "
                        f"timesteps: choose at most {train}")
    scheduler = SCHEDULERS[name](dict(config))
    scheduler.set_timesteps(num_inference_steps, device=device)
    return scheduler


def accepts(scheduler: SchedulerMixin, argument: str) -> bool:
    """Whether ``scheduler.step`` takes keyword ``argument`` (e.g. ``eta``, ``generator``)."""
    return argument in inspect.signature(scheduler.step).parameters
