"""Latency harness in the manner of optimum-benchmark: a case is a dataclass, a run returns a report of raw values.

Every measurement is taken after warm-up, repeated, and summarised by its median and interquartile range, with the
raw values kept; step types and plans are timed round-robin so that load from other processes falls on all of
them alike.  The report records the batch size, thread count, device and library versions
(:func:`flexiffusion.environment.environment`).  The public entry point, re-exporting one module per concept:
timer and summaries (:mod:`bench.cost.timing`), cases and reports (:mod:`bench.cost.cases`), per-step latency
(:mod:`bench.cost.step_latency`), whole plans (:mod:`bench.cost.plan_latency`).
"""
from __future__ import annotations

from .cases import LatencyCase, LatencyReport, case_unet
from .plan_latency import measure_plan, measure_plans, preset_denoiser
from .step_latency import engine_overhead, measure_steps
from .timing import Measurement, Timer, quantile, time_round_robin

__all__ = ["LatencyCase", "LatencyReport", "Measurement", "Timer", "case_unet", "engine_overhead", "measure_plan",
           "measure_plans", "measure_steps", "preset_denoiser", "quantile", "time_round_robin"]
