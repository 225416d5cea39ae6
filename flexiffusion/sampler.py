"""The one sampler loop: runs any plan (full / partial(b) / null per step) with a diffusers scheduler.

Null-step semantics (zero-order hold): a null step evaluates no network; the loop passes the most recent model
output to ``scheduler.step`` over that timestep as usual.  With DDIM at eta = 0 (and DPM-Solver order 1) this is
algebraically the same as jumping over the timestep (the predicted x0 and epsilon are unchanged along the jump),
so a null step is "skipping" that timestep.  With PLMS and DPM-Solver orders 2-3 it is not: the held output
enters the solver's history (PLMS's four-term ``ets``, DPM-Solver's ``model_outputs``) as the output at the null
step's noise level, so later multistep updates extrapolate from it.  Either way the state after step ``i``
depends on ``plan.steps[:i + 1]`` only, which is what makes prefix resumption exact.

The loop's state between steps (latents, scheduler state, the step engine's cache, the last model output, the
step-noise generators) is a :class:`~flexiffusion.state.SamplerState`: run a plan to step ``k``, keep the state,
and resume any plan with the same first ``k`` steps from it (same model, scheduler kind/config/grid, noise,
condition, guidance and step arguments; checked); the result is identical to running that plan from the start.
The loop runs without autograd whatever the caller's grad mode.
"""
from __future__ import annotations

import contextlib
from typing import Callable

import torch
from tqdm.auto import tqdm

from .errors import UserError
from .schedule import FULL, PARTIAL, Plan, format_branches
from .scheduler_state import restore_scheduler, scheduler_state
from .state import SamplerState, check_dependencies, dependencies, step_generators

__all__ = ["SamplerState", "sample"]


def _check_resume(state: SamplerState, plan: Plan, stop: int, start_needs: frozenset[int]) -> None:
    if tuple(plan.tokens()[:state.index]) != state.prefix:
        raise UserError("cannot resume: the plan's first steps differ from the ones that produced the state")
    if stop < state.index:
        raise UserError(f"cannot resume: stop={stop} lies before the state's step {state.index}")
    missing = sorted(start_needs - state.kept)
    if missing:
        raise UserError(f"cannot resume: the plan's partial steps after step {state.index} use branch {missing[0]} "
                        f"but the state kept branches {format_branches(state.kept)}: store the parent state with "
                        "cache_branches= including every branch its children use")


def _partials_until_full(plan: Plan, start: int) -> frozenset[int]:
    """Branches of the partial steps from ``start`` up to the next full step (what the cache must hold)."""
    needs = set()
    for s in plan.steps[start:]:
        if s.kind == FULL:
            break
        if s.kind == PARTIAL:
            needs.add(s.branch)
    return frozenset(needs)


def _to(t, device):
    """``t`` on ``device``; a tensor whose elements overlap (an expanded shape stand-in of the engine's cache) moves
    its storage only, not the full extent that ``Tensor.to`` would materialise."""
    if t is None or t.device == device:
        return t
    storage = t.untyped_storage()
    if storage.nbytes() >= t.numel() * t.element_size():
        return t.to(device)
    elements = t.new_empty(0).set_(storage, 0, (storage.nbytes() // t.element_size(),), (1,)).to(device)
    return elements.as_strided(t.shape, t.stride(), t.storage_offset())


def _cache_to(cache: dict, device) -> dict:
    return {"kept": list(cache.get("kept", ())),
            "contexts": {ctx: {k: _nested_to(v, device) for k, v in feats.items()}
                         for ctx, feats in cache.get("contexts", {}).items()}}


def _nested_to(v, device):
    if isinstance(v, torch.Tensor):
        return _to(v, device)
    if isinstance(v, (tuple, list)):
        return type(v)(_nested_to(x, device) for x in v)
    return v


@torch.no_grad()
def sample(denoiser: Callable, scheduler, plan: Plan, noise: torch.Tensor, cond=None, *,
           state: SamplerState | None = None, stop: int | None = None, cache_branches=None,
           step_kwargs: dict | None = None, callback: Callable | None = None, progress: bool = False
           ) -> SamplerState:
    """Run ``plan`` over ``scheduler.timesteps`` from ``noise`` (or from ``state``) up to step ``stop``.

    ``denoiser(x, t, cond)`` returns the model output; its ``engine`` (a StepEngine or None) executes partial
    steps.  ``cache_branches``: branches every full step keeps features for, besides those the plan's following
    partial steps use (give the search space's branches when states will be resumed by other plans).
    ``step_kwargs`` go to ``scheduler.step`` (e.g. ``eta``, ``generator``: the generators' states are kept in the
    returned state and restored on resume).  ``state``: resume from it; ``scheduler`` must be a scheduler of the
    same kind, config and grid (fresh or not: the stored scheduler state is loaded into it).
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
    keep = frozenset() if cache_branches is None else frozenset(cache_branches)
    depends = dependencies(denoiser, noise, cond, step_kwargs)
    gens = step_generators(step_kwargs)

    if state is None:
        x = noise * scheduler.init_noise_sigma
        start, last = 0, None
        if engine is not None:
            engine.reset()
    else:
        _check_resume(state, plan, stop, _partials_until_full(plan, state.index))
        check_dependencies(state.depends, depends)
        restore_scheduler(scheduler, state.scheduler, noise.device)
        x, start, last = _to(state.latents, noise.device), state.index, _to(state.last_output, noise.device)
        if engine is not None:
            engine.load_cache_state(_cache_to(state.cache, noise.device))
        for g, saved in zip(gens, state.generators or ()):
            g.set_state(saved)

    for i in tqdm(range(start, stop), disable=not progress, desc=plan.name or "sampling", leave=False):
        t, step = timesteps[i], plan.steps[i]
        if step.evaluates:
            needs = (plan.cache_needs(i) | keep) if step.kind == FULL else None
            mode = engine.step(step, keep=needs) if engine is not None else contextlib.nullcontext()
            with mode:
                last = denoiser(scheduler.scale_model_input(x, t), t, cond)
        x = scheduler.step(last, t, x, **step_kwargs, return_dict=False)[0]
        if callback is not None:
            callback(i, t, x)

    return SamplerState(stop, x, scheduler_state(scheduler), engine.cache_state() if engine is not None else {},
                        last, tuple(plan.tokens()[:stop]), depends,
                        [g.get_state() for g in gens] if gens else None)
