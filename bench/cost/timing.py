"""Timing primitives in the manner of optimum-benchmark: a synchronised timer, round-robin repeats, robust summaries.

Every timed call is bracketed by :func:`flexiffusion.devices.synchronize` of the timer's device: before the start,
so that no earlier queued work is counted, and after the call, so that the call's own kernels have finished before
the clock stops (CUDA launches are asynchronous; on the CPU the hook is a no-op, its kernels are synchronous).  On
CUDA the interval is read from CUDA events recorded on the device's current stream around the call, on the CPU from
``time.perf_counter``.  Callables are timed round-robin (a, b, c, then again), so
load that other processes put on a shared machine falls on all of them alike and their ratios stay meaningful.
A :class:`Measurement` keeps the raw values with their median and interquartile range.
"""
from __future__ import annotations

import statistics
import time
from dataclasses import dataclass
from typing import Callable, Sequence

import torch

from flexiffusion.devices import synchronize


class Timer:
    """Times one call, the device synchronised before the start and after the call: CUDA events on a GPU,
    ``perf_counter`` on the CPU.  ``sync``: the synchronisation hook (default :func:`synchronize` of ``device``)."""

    def __init__(self, device: str | torch.device = "cpu", sync: Callable[[], None] | None = None):
        self.device = torch.device(device)
        self.cuda = self.device.type == "cuda"
        self._sync = sync

    @property
    def kind(self) -> str:
        """What the values are read from: ``cuda-events`` or ``perf_counter``."""
        return "cuda-events" if self.cuda else "perf_counter"

    def sync(self) -> None:
        if self._sync is not None:
            self._sync()
        else:
            synchronize(self.device)

    def __call__(self, fn: Callable[[], object]) -> float:
        self.sync()  # nothing queued before the start
        if self.cuda:
            stream = torch.cuda.current_stream(self.device)
            start = torch.cuda.Event(enable_timing=True)
            stop = torch.cuda.Event(enable_timing=True)
            start.record(stream)
            fn()
            stop.record(stream)
            self.sync()  # the call's kernels (on any stream of the device) have finished
            return start.elapsed_time(stop) / 1000.0
        t0 = time.perf_counter()
        fn()
        self.sync()
        return time.perf_counter() - t0


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


def quantile(values: Sequence[float], q: float) -> float:
    """Linear-interpolation quantile (numpy's default)."""
    xs = sorted(values)
    if len(xs) == 1:
        return xs[0]
    pos = q * (len(xs) - 1)
    lo = int(pos)
    hi = min(lo + 1, len(xs) - 1)
    return xs[lo] + (xs[hi] - xs[lo]) * (pos - lo)


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
        return quantile(self.values, 0.25)

    @property
    def q3(self) -> float:
        return quantile(self.values, 0.75)

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
