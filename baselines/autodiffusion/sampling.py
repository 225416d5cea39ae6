"""Running an AutoDiffusion candidate with the common sampler loop (its fitness: :mod:`.evaluation`).

Timesteps: a candidate's K timesteps are any subset of the training grid, so the plan is K full steps over a
scheduler whose grid is exactly that subset.  diffusers' DDIM only spaces its grid uniformly (its previous timestep
is ``t - T // K``), so the subset runs on ``DPMSolverMultistepScheduler(solver_order=1)`` with custom timesteps:
first-order DPM-Solver(++) is DDIM (Lu et al. 2022), and its final step to sigma 0 is DDIM's last step with
``set_alpha_to_one``.  (A plan of full/null steps over the 1000-step DDIM grid would also be exact under DDIM,
but it cannot start below the grid's first timestep without a model output: null steps before the first full step
are not a plan.)  Tested: the uniform subset equals diffusers' DDIM at K steps within float32 noise.
"""
from __future__ import annotations

import contextlib
import functools
from typing import Sequence

import torch
from diffusers import DPMSolverMultistepScheduler

from flexiffusion.errors import UserError
from flexiffusion.schedule import Plan

from .candidate import Candidate
from .layers import LayerDropConfig, apply_layer_drop, droppable_layers, remove_layer_drop


def subset_scheduler(timesteps: Sequence[int]):
    """Factory ``(config, grid_length, device) -> scheduler`` whose grid is ``timesteps`` (DDIM-equivalent); a
    picklable partial, so that it travels to Ray actors."""
    return functools.partial(_subset, tuple(sorted({int(t) for t in timesteps}, reverse=True)))


def _subset(ts: tuple[int, ...], config: dict, length: int, device=None):
    if length != len(ts):
        raise UserError(f"the plan has {length} steps but the candidate {len(ts)} timesteps")
    if ts[0] >= config.get("num_train_timesteps", 1000) or ts[-1] < 0:
        raise UserError(f"timesteps {ts[0]}..{ts[-1]} outside the training grid "
                        f"0..{config.get('num_train_timesteps', 1000) - 1}")
    sched = DPMSolverMultistepScheduler.from_config(
        {k: v for k, v in config.items() if k not in ("set_alpha_to_one", "skip_prk_steps", "clip_sample")},
        solver_order=1, algorithm_type="dpmsolver++", final_sigmas_type="zero")
    sched.set_timesteps(timesteps=list(ts), device=device)
    return sched


@contextlib.contextmanager
def dropping(unet, candidate: Candidate):
    """The candidate's layer drops attached to ``unet`` for the duration of the block."""
    names = droppable_layers(unet)
    apply_layer_drop(unet, LayerDropConfig(candidate.drop_map(names)))
    try:
        yield
    finally:
        remove_layer_drop(unet)


def candidate_plan(c: Candidate) -> Plan:
    """The plan a candidate runs: K full steps (on :func:`subset_scheduler` of its timesteps)."""
    return Plan.full(len(c.timesteps), name=f"autodiffusion[{c.key()}]")


def generate_candidate(bundle, candidate: Candidate, seeds, batch_size: int = 64, progress: bool = False,
                       **kwargs) -> torch.Tensor:
    """uint8 images of ``candidate`` for ``seeds`` (bench.generate with the subset scheduler and the drop hook)."""
    from bench.generate import generate_images

    with dropping(bundle.unet, candidate):
        return generate_images(bundle, candidate_plan(candidate), seeds,
                               scheduler=subset_scheduler(candidate.timesteps), batch_size=batch_size,
                               progress=progress, **kwargs)
