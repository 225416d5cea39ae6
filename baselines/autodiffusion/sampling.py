"""Running an AutoDiffusion candidate with the common sampler loop, and its fitness (FID vs real data or rFID vs the
teacher).

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
from typing import Sequence

import torch
from diffusers import DPMSolverMultistepScheduler

from flexiffusion.errors import UserError
from flexiffusion.schedule import Plan

from .candidate import Candidate
from .layers import LayerDropConfig, apply_layer_drop, droppable_layers, remove_layer_drop


def subset_scheduler(timesteps: Sequence[int]):
    """Factory ``(config, grid_length, device) -> scheduler`` whose grid is ``timesteps`` (DDIM-equivalent)."""
    ts = sorted({int(t) for t in timesteps}, reverse=True)

    def make(config: dict, length: int, device=None):
        if length != len(ts):
            raise UserError(f"the plan has {length} steps but the candidate {len(ts)} timesteps")
        if ts[0] >= config.get("num_train_timesteps", 1000) or ts[-1] < 0:
            raise UserError(f"timesteps {ts[0]}..{ts[-1]} outside the training grid "
                            f"0..{config.get('num_train_timesteps', 1000) - 1}")
        sched = DPMSolverMultistepScheduler.from_config(
            {k: v for k, v in config.items() if k not in ("set_alpha_to_one", "skip_prk_steps", "clip_sample")},
            solver_order=1, algorithm_type="dpmsolver++", final_sigmas_type="zero")
        sched.set_timesteps(timesteps=ts, device=device)
        return sched

    return make


@contextlib.contextmanager
def dropping(unet, candidate: Candidate):
    """The candidate's layer drops attached to ``unet`` for the duration of the block."""
    names = droppable_layers(unet)
    apply_layer_drop(unet, LayerDropConfig(candidate.drop_map(names)))
    try:
        yield
    finally:
        remove_layer_drop(unet)


def generate_candidate(bundle, candidate: Candidate, seeds, batch_size: int = 64, progress: bool = False,
                       **kwargs) -> torch.Tensor:
    """uint8 images of ``candidate`` for ``seeds`` (bench.generate with the subset scheduler and the drop hook)."""
    from bench.generate import generate_images

    with dropping(bundle.unet, candidate):
        return generate_images(bundle, Plan.full(len(candidate.timesteps), name="autodiffusion"), seeds,
                               scheduler=subset_scheduler(candidate.timesteps), batch_size=batch_size,
                               progress=progress, **kwargs)


class RFIDFitness:
    """rFID of a candidate's images against the teacher's (``teacher_steps`` DDIM steps, same seeds)."""

    def __init__(self, bundle, seeds, teacher_steps: int = 100, batch_size: int = 64, cache_dir=None,
                 extractor: str | None = None):
        from bench.evaluation import relative_fid

        kw = {"extractor": extractor} if extractor else {}
        self.bundle, self.seeds, self.batch_size = bundle, list(seeds), batch_size
        self.rfid = relative_fid(bundle, self.seeds, teacher_steps, gen_batch_size=batch_size,
                                 cache_dir=cache_dir, **kw)

    def __call__(self, candidate: Candidate) -> float:
        images = generate_candidate(self.bundle, candidate, self.seeds, self.batch_size)
        return float(self.rfid.score_images(images)["rfid"])


class FIDFitness:
    """FID of a candidate's images against real data (a named source such as ``digits-train``), as published."""

    def __init__(self, bundle, seeds, real: str = "digits-train", batch_size: int = 64, cache_dir=None,
                 extractor: str | None = None):
        from bench.quality.sources import resolve_input

        self.bundle, self.seeds, self.batch_size, self.cache_dir = bundle, list(seeds), batch_size, cache_dir
        self.real, self.label = resolve_input(real, "real")
        self.extractor = extractor

    def __call__(self, candidate: Candidate) -> float:
        from bench.quality import fidelity

        images = generate_candidate(self.bundle, candidate, self.seeds, self.batch_size)
        kw = {"extractor": self.extractor} if self.extractor else {}
        return float(fidelity(images, self.real, ("fid",), reference_source=self.label, cache_dir=self.cache_dir,
                              **kw)["fid"])
