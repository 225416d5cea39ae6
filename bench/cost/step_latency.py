"""Per-step latency: the model's native forward, a full step and partial(b) steps through the step engine.

A partial step reads the cache that a full step filled: each round runs the full step first, then times the partial
calls (which leave the cache unchanged).  With classifier-free guidance (the preset's default) the U-Net runs on
the batched conditional and unconditional inputs, i.e. at twice the batch size, as diffusers pipelines do.
"""
from __future__ import annotations

import statistics

import torch

from flexiffusion.errors import UserError
from flexiffusion.threads import num_threads

from .cases import LatencyCase, LatencyReport, prepare, report_environment
from .timing import Measurement, Timer


def measure_steps(case: LatencyCase, progress: bool = False) -> LatencyReport:
    """Per-call latency of the native forward (no engine attached), a full step and partial(b) steps.

    Each round times all of them: the engine is detached for the native call and attached (untimed) for the
    others; the full step comes first among those and refreshes the cache the partial steps read."""
    from flexiffusion.engine import StepEngine
    from flexiffusion.schedule import Step

    case.validate()
    preset, unet, sample, t, kwargs, guided = prepare(case)
    timer = Timer(case.torch_device)  # device synchronised before the start and after each timed call

    def call():
        unet(sample, t, **kwargs, return_dict=False)

    probe = StepEngine(unet)  # structure only, nothing attached
    branches = tuple(range(1, probe.num_branches + 1)) if case.branches is None else tuple(case.branches)
    bad = [b for b in branches if not 1 <= b <= probe.num_branches]
    if bad:
        raise UserError(f"branch {bad[0]} out of range: {case.preset} has branches 1..{probe.num_branches}")
    steps = [("full", None, Step.full())] + [("partial", b, Step.partial(b)) for b in branches]
    values: dict = {("native", None): []} if case.native else {}
    values.update({(name, b): [] for name, b, _ in steps})
    rounds = range(case.warmup + case.repeats)
    if progress:
        from tqdm.auto import tqdm

        rounds = tqdm(rounds, desc=f"latency {case.preset} (batch {sample.shape[0]})", leave=False)
    with num_threads(case.threads), torch.no_grad():
        for r in rounds:
            timed = {}
            # The native call sits right before the full step on even rounds and right after it on odd ones, so
            # each round gives one paired (native, full) ratio without order bias.  Detaching clears the engine's
            # cache, so it is carried over for the partial steps that follow.
            if case.native and r % 2 == 0:
                timed[("native", None)] = timer(call)
            engine = StepEngine.attach(unet)
            try:
                for i, (name, b, step) in enumerate(steps):
                    def stepped(step=step):
                        with engine.step(step):
                            call()
                    timed[(name, b)] = timer(stepped)
                    if i == 0 and case.native and r % 2 == 1:
                        state = engine.cache_state()
                        engine.detach()
                        timed[("native", None)] = timer(call)
                        engine = StepEngine.attach(unet)
                        engine.load_cache_state(state)
            finally:
                engine.detach()
            if r >= case.warmup:
                for key, v in timed.items():
                    values[key].append(v)
    report = LatencyReport(case, report_environment(case, timer, guidance=guided, unet_batch=int(sample.shape[0])))
    for (name, b), vs in values.items():
        report.measurements.append(Measurement(name, b, case.batch_size, vs))
    return report


def engine_overhead(report: LatencyReport, paired: bool = True) -> float:
    """Relative cost of the engine on a full step.  ``paired``: median over rounds of full / native - 1 (the two
    calls of a round are adjacent, so load that changes between rounds cancels); else median(full) /
    median(native) - 1."""
    native, full = report.get("native").values, report.get("full").values
    if paired:
        return statistics.median(f / n for f, n in zip(full, native)) - 1.0
    return statistics.median(full) / statistics.median(native) - 1.0
