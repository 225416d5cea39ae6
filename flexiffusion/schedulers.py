"""Registry of diffusers schedulers that the sampler loop runs: DDIM, PLMS (PNDM with skip_prk_steps), DPM-Solver
multistep of orders 1-3 (``dpm1``-``dpm3``; order k reuses the outputs of the k - 1 previous steps) and DPM-Solver
singlestep of orders 1-3 (``dpm-singlestep1``-``3``; diffusers' order list: runs [1, 2, .., k] of k evaluations
each form one k-th order interval) (Lu et al. 2022)."""
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
