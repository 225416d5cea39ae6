"""The one sampler loop: runs any plan (full / partial(b) / null per step) with a diffusers scheduler.

Null-step semantics: a null step evaluates no network; the loop reuses the most recent model output
(zero-order hold) and steps the scheduler over that timestep as usual.  With DDIM at eta = 0 this is
algebraically the same as jumping over the timestep (the predicted x0 and epsilon are unchanged along the jump),
so a null step is "skipping" that timestep; the state after step ``i`` depends on ``plan.steps[:i + 1]`` only.

The loop's state between steps (latents, scheduler state, the step engine's cache, the last model output) is a
:class:`SamplerState`: run a plan to step ``k``, keep the state, and resume any plan with the same first ``k``
steps (and the same noise) from it; the result is identical to running that plan from the start.
"""
from __future__ import annotations

import contextlib
import copy
from dataclasses import dataclass, field
from typing import Callable

import torch
from tqdm.auto import tqdm

from .errors import UserError
from .schedule import FULL, Plan


@dataclass
class SamplerState:
    """Everything the loop carries between steps; ``index`` steps of the plan have been run."""

    index: int
    latents: torch.Tensor
    scheduler: object                      # a deep copy of the diffusers scheduler (its multistep history too)
    cache: dict = field(default_factory=dict)   # step-engine cache per context
    last_output: torch.Tensor | None = None
    prefix: tuple[str, ...] = ()           # the plan tokens that produced this state

    def save(self, path) -> None:
        """Write the state to ``path`` atomically (torch.save of plain tensors, dicts and the scheduler)."""
        import os
        from pathlib import Path

        path = Path(path)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        torch.save(self.__dict__, tmp)
        os.replace(tmp, path)

    @classmethod
    def load(cls, path) -> "SamplerState":
        try:
            data = torch.load(path, map_location="cpu", weights_only=False)
        except FileNotFoundError:
            raise UserError(f"sampler state {path} not found") from None
        return cls(**data)

    def clone(self) -> "SamplerState":
        return SamplerState(self.index, self.latents, copy.deepcopy(self.scheduler),
                            {k: dict(v) for k, v in self.cache.items()}, self.last_output, self.prefix)


def sample(denoiser: Callable, scheduler, plan: Plan, noise: torch.Tensor, cond=None, *,
           state: SamplerState | None = None, stop: int | None = None, cache_branches=None,
           step_kwargs: dict | None = None, callback: Callable | None = None, progress: bool = False
           ) -> SamplerState:
    """Run ``plan`` over ``scheduler.timesteps`` from ``noise`` (or from ``state``) up to step ``stop``.

    ``denoiser(x, t, cond)`` returns the model output; its ``engine`` (a StepEngine or None) executes partial
    steps.  ``cache_branches``: branches every full step keeps features for (default: only those the plan's
    following partial steps use; give the search space's branches when states will be resumed by other plans).
    ``callback(i, t, latents)`` is called after each step.
    """
    engine = getattr(denoiser, "engine", None)
    timesteps = scheduler.timesteps
    plan.validate(engine.num_branches if engine is not None else None, len(timesteps))
    if engine is None and plan.branches:
        raise UserError("the plan has partial steps but the denoiser has no step engine attached")
    stop = len(plan) if stop is None else stop
    if not 0 <= stop <= len(plan):
        raise UserError(f"stop={stop} outside the plan's 0..{len(plan)} steps")
    step_kwargs = dict(step_kwargs or {})
    keep = None if cache_branches is None else frozenset(cache_branches)

    if state is None:
        x = noise * scheduler.init_noise_sigma
        start, last = 0, None
        if engine is not None:
            engine.reset()
    else:
        if tuple(plan.tokens()[:state.index]) != state.prefix:
            raise UserError("cannot resume: the plan's first steps differ from the ones that produced the state")
        state = state.clone()
        scheduler = state.scheduler
        x, start, last = state.latents, state.index, state.last_output
        if engine is not None:
            engine.load_cache_state(state.cache)

    for i in tqdm(range(start, stop), disable=not progress, desc=plan.name or "sampling", leave=False):
        t, step = timesteps[i], plan.steps[i]
        if step.evaluates:
            needs = (plan.cache_needs(i) if keep is None else keep) if step.kind == FULL else None
            mode = engine.step(step, keep=needs) if engine is not None else contextlib.nullcontext()
            with mode:
                last = denoiser(scheduler.scale_model_input(x, t), t, cond)
        x = scheduler.step(last, t, x, **step_kwargs, return_dict=False)[0]
        if callback is not None:
            callback(i, t, x)

    return SamplerState(stop, x, copy.deepcopy(scheduler), engine.cache_state() if engine is not None else {},
                        last, tuple(plan.tokens()[:stop]))
