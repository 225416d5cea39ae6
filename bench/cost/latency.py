"""Latency harness in the manner of optimum-benchmark: a case is a dataclass, a run returns a report of raw values.

Every measurement is taken after warm-up, repeated, and summarised by its median and interquartile range, with the
raw values kept.  Step types are timed round-robin (full, partial(b1), partial(b2), ... then again), so load that
other processes put on a shared machine falls on all of them alike and their ratios stay meaningful.  On CUDA the
timer records CUDA events around the call and synchronises before reading them; on the CPU it reads
``time.perf_counter`` (the CPU kernels are synchronous).  The report records the batch size, thread count, device
and library versions.

A partial step reads the cache that a full step filled: each case runs one full step first, then times the partial
calls (which leave the cache unchanged).  With classifier-free guidance (the preset's default) the U-Net runs on
the batched conditional and unconditional inputs, i.e. at twice the batch size, as diffusers pipelines do.
"""
from __future__ import annotations

import contextlib
import platform
import statistics
import time
from dataclasses import asdict, dataclass, field
from typing import Callable, Sequence

import torch

from flexiffusion.errors import UserError


@dataclass(frozen=True)
class LatencyCase:
    """What to time: a preset's U-Net steps at one batch size, thread count and device."""

    preset: str
    batch_size: int = 16
    threads: int | None = 2          # torch intra-op threads on the CPU (None: leave as is)
    device: str = "cpu"
    dtype: str = "float32"
    warmup: int = 2
    repeats: int = 10
    branches: tuple[int, ...] | None = None   # partial steps to time; None: every branch, (): none
    guidance: bool | None = None     # None: the preset's own (CFG doubles the U-Net batch)
    native: bool = True              # also time the model's own forward, without the engine attached

    def validate(self) -> "LatencyCase":
        if self.batch_size < 1:
            raise UserError(f"batch size must be >= 1, got {self.batch_size}")
        if self.threads is not None and self.threads < 1:
            raise UserError(f"threads must be >= 1, got {self.threads}")
        if self.repeats < 1 or self.warmup < 0:
            raise UserError(f"need repeats >= 1 and warmup >= 0, got {self.repeats} and {self.warmup}")
        if self.dtype not in ("float32", "float16", "bfloat16"):
            raise UserError(f"unknown dtype {self.dtype!r}: use float32, float16 or bfloat16")
        if self.device.startswith("cuda") and not torch.cuda.is_available():
            raise UserError(f"device {self.device!r} requested but CUDA is not available here")
        return self


@dataclass
class Measurement:
    """Raw timings (seconds per call) of one thing at one batch size, with robust summaries."""

    name: str                       # "native", "full", "partial", or "plan:<name>"
    branch: int | None
    batch_size: int                 # images per call
    values: list[float]
    calls: int = 1                  # U-Net calls (steps) per timed value; per-step = value / calls

    @property
    def median(self) -> float:
        return statistics.median(self.values)

    @property
    def q1(self) -> float:
        return _quantile(self.values, 0.25)

    @property
    def q3(self) -> float:
        return _quantile(self.values, 0.75)

    @property
    def iqr(self) -> float:
        return self.q3 - self.q1

    @property
    def mean(self) -> float:
        return statistics.fmean(self.values)

    @property
    def per_image(self) -> float:
        """Median seconds per image (per call / batch size)."""
        return self.median / self.batch_size

    @property
    def per_step(self) -> float:
        """Median seconds per U-Net step (for a plan: per step of its grid)."""
        return self.median / self.calls

    def summary(self) -> dict:
        return {"name": self.name, "branch": self.branch, "batch_size": self.batch_size, "calls": self.calls,
                "n": len(self.values), "median_s": self.median, "iqr_s": self.iqr, "q1_s": self.q1, "q3_s": self.q3,
                "mean_s": self.mean, "per_image_s": self.per_image, "per_step_s": self.per_step}


def _quantile(values: Sequence[float], q: float) -> float:
    """Linear-interpolation quantile (numpy's default)."""
    xs = sorted(values)
    if len(xs) == 1:
        return xs[0]
    pos = q * (len(xs) - 1)
    lo = int(pos)
    hi = min(lo + 1, len(xs) - 1)
    return xs[lo] + (xs[hi] - xs[lo]) * (pos - lo)


@dataclass
class LatencyReport:
    """A case, its environment and its measurements; ``to_dict(flat=True)`` / ``to_dataframe()`` for tables."""

    case: LatencyCase
    environment: dict
    measurements: list[Measurement] = field(default_factory=list)

    def get(self, name: str, branch: int | None = None) -> Measurement:
        for m in self.measurements:
            if m.name == name and m.branch == branch:
                return m
        raise KeyError((name, branch))

    def rows(self) -> list[dict]:
        """One tidy row per measurement: case, environment and summary."""
        base = {**{f"case.{k}": v for k, v in asdict(self.case).items()},
                **{f"env.{k}": v for k, v in self.environment.items()}}
        return [{**base, **m.summary(), "values": list(m.values)} for m in self.measurements]

    def to_dict(self, flat: bool = False) -> dict:
        if not flat:
            return {"case": asdict(self.case), "environment": dict(self.environment),
                    "measurements": [{**m.summary(), "values": list(m.values)} for m in self.measurements]}
        out = {**{f"case.{k}": v for k, v in asdict(self.case).items()},
               **{f"env.{k}": v for k, v in self.environment.items()}}
        for m in self.measurements:
            label = m.name if m.branch is None else f"{m.name}.{m.branch}"
            out.update({f"{label}.{k}": v for k, v in m.summary().items() if k not in ("name", "branch")})
        return out

    def to_dataframe(self):
        import pandas as pd

        return pd.DataFrame(self.rows())


# ---- environment and timers -------------------------------------------------------------------------------------


def environment(device: str = "cpu", threads: int | None = None) -> dict:
    """Device, thread count and library versions, recorded with every result."""
    import importlib.metadata as md

    def version(dist: str) -> str:
        try:
            return md.version(dist)
        except md.PackageNotFoundError:
            return "none"

    dev = torch.device(device)
    if dev.type == "cuda":
        name = torch.cuda.get_device_name(dev)
    else:
        name = platform.processor() or platform.machine()
    return {"device": str(dev), "device_name": name, "threads": threads or torch.get_num_threads(),
            "cpu_count": _cpu_count(), "torch": torch.__version__, "diffusers": version("diffusers"),
            "python": platform.python_version(), "platform": platform.platform(), "git_commit": _git_commit()}


def _cpu_count() -> int:
    import os

    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def _git_commit() -> str:
    import subprocess
    from pathlib import Path

    try:
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=Path(__file__).resolve().parent,
                             capture_output=True, text=True, timeout=5)
        return out.stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


class Timer:
    """Times one call: CUDA events on a GPU (synchronised before reading), ``perf_counter`` on the CPU."""

    def __init__(self, device: str | torch.device = "cpu"):
        self.device = torch.device(device)
        self.cuda = self.device.type == "cuda"

    def __call__(self, fn: Callable[[], object]) -> float:
        if self.cuda:
            torch.cuda.synchronize(self.device)  # nothing queued before the start event
            start = torch.cuda.Event(enable_timing=True)
            stop = torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            stop.record()
            stop.synchronize()
            return start.elapsed_time(stop) / 1000.0
        t0 = time.perf_counter()
        fn()
        return time.perf_counter() - t0


@contextlib.contextmanager
def torch_threads(threads: int | None):
    """Set torch's intra-op thread count for the block, restoring it afterwards."""
    if threads is None:
        yield
        return
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def time_round_robin(fns: dict, warmup: int, repeats: int, timer: Timer) -> dict[str, list[float]]:
    """Warm each callable up, then time them in turn ``repeats`` times; raw seconds per callable."""
    for _ in range(warmup):
        for fn in fns.values():
            timer(fn)
    out: dict = {k: [] for k in fns}
    for _ in range(repeats):
        for k, fn in fns.items():
            out[k].append(timer(fn))
    return out


# ---- step latency -----------------------------------------------------------------------------------------------


def _prepare(case: LatencyCase):
    from bench.presets import get_preset

    preset = get_preset(case.preset)
    guided = preset.guidance if case.guidance is None else case.guidance
    unet = preset.build_unet()
    if torch.device(case.device) != next(unet.parameters()).device:
        unet = unet.to(case.device)  # the preset's cached module moves with it
    if getattr(torch, case.dtype) != next(unet.parameters()).dtype:
        unet = unet.to(getattr(torch, case.dtype))
    calls = case.batch_size * (2 if guided else 1)
    sample, t, kwargs = preset.example_inputs(batch_size=calls)
    dtype = getattr(torch, case.dtype)
    sample = sample.to(case.device, dtype)
    kwargs = {k: v.to(case.device, dtype if v.is_floating_point() else v.dtype) for k, v in kwargs.items()}
    return preset, unet, sample, t.to(case.device), kwargs, guided


def measure_steps(case: LatencyCase, progress: bool = False) -> LatencyReport:
    """Per-call latency of the native forward (no engine attached), a full step and partial(b) steps.

    Each round times all of them: the engine is detached for the native call and attached (untimed) for the
    others; the full step comes first among those and refreshes the cache the partial steps read."""
    from flexiffusion.engine import StepEngine
    from flexiffusion.schedule import Step

    case.validate()
    preset, unet, sample, t, kwargs, guided = _prepare(case)
    timer = Timer(case.device)

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
    with torch_threads(case.threads), torch.no_grad():
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
    report = LatencyReport(case, {**environment(case.device, case.threads), "guidance": guided,
                                  "unet_batch": int(sample.shape[0])})
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


# ---- end-to-end plan latency ------------------------------------------------------------------------------------


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
    preset, unet, _, _, _, guided = _prepare(case)
    dtype = getattr(torch, case.dtype)
    noise = torch.randn((case.batch_size, *preset.sample_shape),
                        generator=torch.Generator().manual_seed(0)).to(case.device, dtype)
    timer = Timer(case.device)
    engine = StepEngine.attach(unet)
    try:
        denoiser, cond = preset_denoiser(preset, unet, engine, guided, case.batch_size, case.device, dtype)
        fns = {}
        for plan in plans:
            plan.validate(engine.num_branches)

            def run(plan=plan):
                sched = make_scheduler_for_grid(scheduler, dict(preset.scheduler_config), len(plan), case.device)
                sample(denoiser, sched, plan, noise, cond)
            fns[f"plan:{plan.name or plan.digest()}"] = run
        with torch_threads(case.threads), torch.no_grad():
            timed = time_round_robin(fns, case.warmup, case.repeats, timer)
    finally:
        engine.detach()
    report = LatencyReport(case, {**environment(case.device, case.threads), "guidance": guided,
                                  "scheduler": scheduler})
    for plan, (key, values) in zip(plans, timed.items()):
        report.measurements.append(Measurement(key, None, case.batch_size, values, calls=len(plan)))
    return report
