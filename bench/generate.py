"""Image generation for the harness: any plan on any bundle, per-sample seeds, batched, uint8 output."""
from __future__ import annotations

import contextlib
from typing import Sequence

import torch
from tqdm.auto import tqdm

from flexiffusion.engine import StepEngine
from flexiffusion.errors import UserError
from flexiffusion.schedule import Plan
from flexiffusion.sampler import sample
from flexiffusion.schedulers import accepts, make_scheduler_for_grid
from flexiffusion.seeds import STEP_NOISE, generators, noise_for_seeds

from .models import ModelBundle



@contextlib.contextmanager
def attached(unet):
    """A step engine attached to ``unet`` for the duration of the block."""
    engine = StepEngine.attach(unet)
    try:
        yield engine
    finally:
        engine.detach()


def labels_for_seeds(bundle: ModelBundle, seeds: Sequence[int]) -> torch.Tensor:
    """Class of image i = seeds[i] mod number of classes, so a sample's class depends only on its seed."""
    return torch.tensor([int(s) % bundle.num_classes for s in seeds], dtype=torch.long)


def to_uint8(images: torch.Tensor) -> torch.Tensor:
    """[-1, 1] float images -> uint8 NCHW."""
    return ((images.float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).cpu()


def expand_prompts(prompts: Sequence[str], n_images: int) -> list[str]:
    """One prompt per image from ``prompts``: one for all, or exactly one per image (else a UserError)."""
    if len(prompts) not in (1, n_images):
        raise UserError(f"{len(prompts)} prompts for {n_images} images: give one, or one per image")
    return list(prompts) * (n_images if len(prompts) == 1 else 1)


def batch_condition(bundle: ModelBundle, seeds: Sequence[int], labels=None, prompts=None, guidance_scale=None):
    """The condition of one batch: prompt embeddings, class labels (given, or from the seeds under guidance) or None."""
    if bundle.conditioning == "text":
        if prompts is None:
            raise UserError("a text-to-image model needs prompts")
        return bundle.encode_prompts(prompts)
    if bundle.conditioning == "class" and (labels is not None or guidance_scale is not None):
        return (labels if labels is not None else labels_for_seeds(bundle, seeds)).to(bundle.device)
    return None


def step_kwargs(scheduler, seeds: Sequence[int], eta: float = 0.0) -> dict:
    """Keyword arguments of ``scheduler.step``: ``eta`` where it takes one, per-sample step noise when eta > 0."""
    kwargs = {}
    if accepts(scheduler, "eta"):
        kwargs["eta"] = eta
    if eta and accepts(scheduler, "generator"):
        kwargs["generator"] = generators(seeds, STEP_NOISE)  # per-sample stream (seed, 1)
    return kwargs


def scheduler_maker(scheduler):
    """``scheduler`` is a registry name or a factory ``(config, grid_length, device) -> scheduler`` (e.g. a
    scheduler with custom timesteps); returns the factory."""
    if callable(scheduler):
        return scheduler
    return lambda config, length, device=None: make_scheduler_for_grid(scheduler, config, length, device=device)


@torch.no_grad()
def generate_latents(bundle: ModelBundle, plan: Plan, seeds: Sequence[int], *, scheduler="ddim",
                     labels: torch.Tensor | None = None, prompts: Sequence[str] | None = None,
                     guidance_scale: float | None = None, cfg: str = "batched", eta: float = 0.0,
                     batch_size: int = 64, progress: bool = True, desc: str | None = None) -> torch.Tensor:
    """Final latents of ``plan`` for every seed (batched; image i depends only on seeds[i] and its condition)."""
    seeds = list(seeds)
    if not seeds:
        raise UserError("no seeds given: generate at least one image")
    if prompts is not None and len(prompts) != len(seeds):
        raise UserError(f"{len(prompts)} prompts for {len(seeds)} seeds: give one prompt per seed")
    if labels is not None and len(labels) != len(seeds):
        raise UserError(f"{len(labels)} labels for {len(seeds)} seeds: give one label per seed")
    if bundle.conditioning == "text" and prompts is None:
        raise UserError("a text-to-image model needs prompts")
    make = scheduler_maker(scheduler)
    make(bundle.scheduler_config, len(plan))  # validates the name early
    device = bundle.device
    out = []
    with attached(bundle.unet) as engine:
        plan.validate(engine.num_branches)
        denoiser = bundle.denoiser(engine, guidance_scale, cfg)
        bar = tqdm(total=len(seeds), desc=desc or plan.name or "generate", unit="img", disable=not progress)
        for lo in range(0, len(seeds), batch_size):
            chunk = seeds[lo:lo + batch_size]
            noise = noise_for_seeds(chunk, bundle.sample_shape, device=device,
                                    dtype=next(bundle.unet.parameters()).dtype)
            cond = batch_condition(bundle, chunk, None if labels is None else labels[lo:lo + batch_size],
                                   None if prompts is None else prompts[lo:lo + batch_size], guidance_scale)
            sched = make(bundle.scheduler_config, len(plan), device=device)
            state = sample(denoiser, sched, plan, noise, cond, step_kwargs=step_kwargs(sched, chunk, eta))
            out.append(state.latents.cpu())
            bar.update(len(chunk))
        bar.close()
    return torch.cat(out)


@torch.no_grad()
def decode_uint8(bundle: ModelBundle, latents: torch.Tensor, batch_size: int = 64) -> torch.Tensor:
    """Decode latents to uint8 images (identity decoder for pixel-space models)."""
    device = bundle.device
    parts = [to_uint8(bundle.decode(latents[i:i + batch_size].to(device))) for i in range(0, len(latents), batch_size)]
    return torch.cat(parts)


def generate_images(bundle: ModelBundle, plan: Plan, seeds: Sequence[int], **kwargs) -> torch.Tensor:
    """uint8 NCHW images of ``plan`` for ``seeds`` (keyword arguments as :func:`generate_latents`)."""
    batch_size = kwargs.get("batch_size", 64)
    return decode_uint8(bundle, generate_latents(bundle, plan, seeds, **kwargs), batch_size)
