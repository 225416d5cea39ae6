"""Image generation for the harness: any plan on any bundle, per-sample seeds, batched, uint8 output."""
from __future__ import annotations

import contextlib
from typing import Callable, Sequence

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
    """Keyword arguments of ``scheduler.step``: ``eta`` where it takes one, per-sample step noise when eta > 0.

    The step-noise generators are CPU generators whatever the model's device: diffusers' ``randn_tensor`` then draws
    on the CPU and moves the noise to the model output's device, so step noise does not depend on the device."""
    kwargs = {}
    if accepts(scheduler, "eta"):
        kwargs["eta"] = eta
    if eta and accepts(scheduler, "generator"):
        kwargs["generator"] = generators(seeds, STEP_NOISE, device="cpu")  # per-sample stream (seed, 1)
    return kwargs


def scheduler_maker(scheduler):
    """``scheduler`` is a registry name or a factory ``(config, grid_length, device) -> scheduler`` (e.g. a
    scheduler with custom timesteps); returns the factory."""
    if callable(scheduler):
        return scheduler
    return lambda config, length, device=None: make_scheduler_for_grid(scheduler, config, length, device=device)


@torch.no_grad()
def sample_batches(bundle: ModelBundle, plan: Plan, seeds: Sequence[int], *, scheduler="ddim",
                   labels: torch.Tensor | None = None, prompts: Sequence[str] | None = None,
                   guidance_scale: float | None = None, cfg: str = "batched", eta: float = 0.0,
                   batch_size: int = 64, states: Sequence | None = None, stops: Sequence[int] | None = None,
                   cache_branches=None, on_stop: Callable[[int, list], None] | None = None,
                   progress: bool = False, desc: str | None = None) -> torch.Tensor:
    """The one batched sampling loop (rows, searches, AutoDiffusion, the ablation): final latents of ``plan`` for
    every seed, on CPU.  Batches of ``batch_size`` seeds, image i depending only on seeds[i] and its condition
    (noise and step noise per seed).

    Resuming and stopping (prefix reuse): ``states`` holds one :class:`~flexiffusion.sampler.SamplerState` per batch
    to resume from (None: from noise); the plan runs to each of ``stops`` in turn (default: its end), every batch
    reaching a stop before any goes on, and ``on_stop(stop, states)`` sees the batches' states at every stop before
    the plan's end.  ``cache_branches``: branches every full step keeps in the states (see
    :func:`flexiffusion.sampler.sample`).  ``scheduler``: a registry name or a factory (:func:`scheduler_maker`)."""
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
    starts = range(0, len(seeds), batch_size)
    chunks = [seeds[lo:lo + batch_size] for lo in starts]
    stops = [len(plan)] if stops is None else [int(s) for s in stops]
    running = [None] * len(chunks) if states is None else list(states)
    if len(running) != len(chunks):
        raise UserError(f"{len(running)} states for {len(chunks)} batches: give one per batch")
    out: list = [None] * len(chunks)
    with attached(bundle.unet) as engine:
        plan.validate(engine.num_branches)
        denoiser = bundle.denoiser(engine, guidance_scale, cfg)
        dtype = next(bundle.unet.parameters()).dtype
        setup: dict[int, tuple] = {}  # batch -> (noise, condition, scheduler, step kwargs), while it runs

        def batch(i: int) -> tuple:
            if i not in setup:
                lo, chunk = starts[i], chunks[i]
                cond = batch_condition(bundle, chunk, None if labels is None else labels[lo:lo + batch_size],
                                       None if prompts is None else prompts[lo:lo + batch_size], guidance_scale)
                # drawn on the CPU per seed, then moved: the same noise on every device
                noise = noise_for_seeds(chunk, bundle.sample_shape, device=device, dtype=dtype)
                # one scheduler per batch for the whole plan: a resume loads the state's scheduler data into it
                sched = make(bundle.scheduler_config, len(plan), device=device)
                setup[i] = (noise, cond, sched, step_kwargs(sched, chunk, eta))
            return setup[i]

        bar = tqdm(total=len(seeds), desc=desc or plan.name or "generate", unit="img", disable=not progress)
        for stop in stops:
            for i, chunk in enumerate(chunks):
                noise, cond, sched, kwargs = batch(i)
                running[i] = sample(denoiser, sched, plan, noise, cond, state=running[i], stop=stop,
                                    cache_branches=cache_branches, step_kwargs=kwargs)
                if stop == len(plan):   # done: keep the latents only (a state holds the engine's features)
                    out[i], running[i] = running[i].latents.cpu(), None
                    del setup[i]
                    bar.update(len(chunk))
            if stop < len(plan) and on_stop is not None:
                on_stop(stop, running)
        bar.close()
    if any(o is None for o in out):
        raise UserError(f"the plan did not run to its end: stops {stops} end before step {len(plan)}")
    return torch.cat(out)


def generate_latents(bundle: ModelBundle, plan: Plan, seeds: Sequence[int], *, scheduler="ddim",
                     labels: torch.Tensor | None = None, prompts: Sequence[str] | None = None,
                     guidance_scale: float | None = None, cfg: str = "batched", eta: float = 0.0,
                     batch_size: int = 64, progress: bool = True, desc: str | None = None) -> torch.Tensor:
    """Final latents of ``plan`` for every seed, from noise (:func:`sample_batches`)."""
    return sample_batches(bundle, plan, seeds, scheduler=scheduler, labels=labels, prompts=prompts,
                          guidance_scale=guidance_scale, cfg=cfg, eta=eta, batch_size=batch_size,
                          progress=progress, desc=desc)


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
