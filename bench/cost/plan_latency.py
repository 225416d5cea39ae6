"""End-to-end latency of whole plans: one batch sampled by :func:`flexiffusion.sampler.sample`, plans round-robin."""
from __future__ import annotations

from typing import Sequence

import torch

from flexiffusion.threads import num_threads

from .cases import LatencyCase, LatencyReport, prepare, report_environment
from .timing import Measurement, Timer, time_round_robin


def preset_denoiser(preset, unet, engine, guided: bool, batch: int, device="cpu", dtype=torch.float32,
                    guidance_scale: float = 7.5):
    """The :mod:`flexiffusion.denoisers` adapter of a preset with random conditioning: ``(denoiser, cond)``."""
    from flexiffusion.denoisers import ClassDenoiser, Denoiser, TextDenoiser

    scale = guidance_scale if guided else None
    g = torch.Generator().manual_seed(1)
    if preset.context_shape is not None:
        ctx = torch.randn((batch, *preset.context_shape), generator=g).to(device, dtype)
        return TextDenoiser(unet, engine, scale), {"prompt_embeds": ctx,
                                                   "negative_prompt_embeds": torch.zeros_like(ctx)}
    if preset.num_classes is not None:
        labels = torch.randint(0, preset.num_classes, (batch,), generator=g).to(device)
        return ClassDenoiser(unet, engine, scale, null_class=preset.null_class), labels
    return Denoiser(unet, engine), None


def measure_plan(case: LatencyCase, plan, scheduler: str = "ddim") -> Measurement:
    """End-to-end time of sampling one batch with ``plan`` (flexiffusion.sampler.sample), raw values per run."""
    return measure_plans(case, [plan], scheduler).measurements[0]


def measure_plans(case: LatencyCase, plans: Sequence, scheduler: str = "ddim") -> LatencyReport:
    """Several plans timed round-robin (same warm-up and repeats), for wall-clock speedups between them."""
    from flexiffusion.engine import StepEngine
    from flexiffusion.sampler import sample
    from flexiffusion.schedulers import make_scheduler_for_grid

    case.validate()
    preset, unet, _, _, _, guided = prepare(case)
    dtype, device = getattr(torch, case.dtype), case.torch_device
    noise = torch.randn((case.batch_size, *preset.sample_shape),   # drawn on the CPU, then moved
                        generator=torch.Generator().manual_seed(0)).to(device, dtype)
    timer = Timer(case.torch_device)  # device synchronised before the start and after each timed call
    engine = StepEngine.attach(unet)
    try:
        denoiser, cond = preset_denoiser(preset, unet, engine, guided, case.batch_size, device, dtype)
        fns = {}
        for plan in plans:
            plan.validate(engine.num_branches)

            def run(plan=plan):
                sched = make_scheduler_for_grid(scheduler, dict(preset.scheduler_config), len(plan), device)
                sample(denoiser, sched, plan, noise, cond)
            fns[f"plan:{plan.name or plan.digest()}"] = run
        with num_threads(case.threads), torch.no_grad():
            timed = time_round_robin(fns, case.warmup, case.repeats, timer)
    finally:
        engine.detach()
    report = LatencyReport(case, report_environment(case, timer, guidance=guided, scheduler=scheduler))
    for plan, (key, values) in zip(plans, timed.items()):
        report.measurements.append(Measurement(key, None, case.batch_size, values, calls=len(plan)))
    return report
