"""Timing primitives in the manner of optimum-benchmark: a synchronised timer, round-robin repeats, robust summaries.

On CUDA the timer records CUDA events around the call and synchronises before reading them; on the CPU it reads
``time.perf_counter`` (the CPU kernels are synchronous).  Callables are timed round-robin (a, b, c, then again), so
load that other processes put on a shared machine falls on all of them alike and their ratios stay meaningful.
A :class:`Measurement` keeps the raw values with their median and interquartile range.
"""
from __future__ import annotations

import statistics
import time
from dataclasses import dataclass
from typing import Callable, Sequence

import torch


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
