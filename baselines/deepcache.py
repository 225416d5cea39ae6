"""DeepCache (Ma et al. 2024) schedules as plain plans: uniform interval N at any branch, and the two published
non-uniform "+" forms reproduced exactly from DeepCache's own code.

* uniform: a full step every ``interval`` steps (step indices 0, N, 2N, ...), ``partial(branch)`` in between.
  The paper's settings A/B/C/D are N = 2/5/10/20 (:data:`PAPER_INTERVALS`).
* "+" SD/DDPM form (``sample_from_quad_center`` of DeepCache's SD pipeline): ``n = ceil(T / N)`` full steps around
  ``center``; ``pow`` is lowered by 0.02 until exactly ``n`` full steps come out (error when ``pow`` reaches 1).
  The original computes ``(-center) ** (1 / pow)`` in Python, which is a *complex* number; numpy carries the
  complex values through ``linspace`` and ``** pow`` and ``int32`` keeps the truncated real part.  We do the same
  arithmetic (a real-valued rewrite, e.g. ``-(center ** (1 / pow))``, gives other indices).
* "+" LDM form (``sample_from_quad`` of DeepCache's LDM code): ``unique(int32(linspace(0, T ** (1/pow), n+1) ** pow))``
  without its last element; no center, no pow search, duplicates collapse (fewer than n full steps is allowed).

Branch numbering is the step engine's (1-based).  DeepCache's own numbers -- ``cache_branch_id`` of its pip helper
``DeepCacheSDHelper`` and ``--branch`` of its DDPM research code -- split an id into (block or level = id // 3,
position = id % 3: 0 and 1 the resnets, 2 the downsampler) and name the first down module a partial step skips; so
our branch is the skip *before* that module, :func:`engine_branch`.  On U-Nets with two resnets and a downsampler
per down block (DDPM CIFAR-10 / LSUN, SD v1.5) that is ``b = id + 1``: the paper's DDPM "branch 2" (DeepCache's
DDPM README runs ``--branch 2``) is our partial(3), which reproduces Table 2's DeepCache rows
(``tests/test_cost.py::test_paper_table2_deepcache_rows``).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Iterable

import numpy as np

from flexiffusion.errors import UserError
from flexiffusion.schedule import Plan, Step

PAPER_INTERVALS = {"A": 2, "B": 5, "C": 10, "D": 20}
FORMS = ("uniform", "sd", "ldm")
PLUS_FORMS = FORMS[1:]
DEFAULT_POW = {"sd": 1.4, "ldm": 1.5}
POW_STEP = 0.02  # the original's search step


def _check(total: int, interval: int, branch: int) -> None:
    if total < 1:
        raise UserError(f"number of steps must be >= 1, got {total}")
    if interval < 1:
        raise UserError(f"interval must be >= 1, got {interval}")
    if branch < 1:
        raise UserError(f"branch must be >= 1 (the engine numbers branches from 1), got {branch}")


def engine_branch(deepcache_id: int, engine) -> int:
    """Our branch ``b`` of DeepCache's branch id on the U-Net of ``engine`` (a :class:`flexiffusion.engine.StepEngine`):
    the id names (level ``id // 3``, position ``id % 3``) the first down module skipped, ``b`` is the skip produced
    just before it."""
    level, position = divmod(int(deepcache_id), 3)
    # a resnet's skip is produced by its attention block where the level has one
    modules = ((f"down.{level}.resnets.{position}", f"down.{level}.attentions.{position}") if position < 2
               else (f"down.{level}.downsamplers.0",))
    for branch in engine.branches:
        if branch.producer in modules:
            return branch.index - 1
    raise UserError(f"DeepCache branch id {deepcache_id} names {modules[0]}, which this U-Net does not have "
                    f"(its down modules: {', '.join(b.producer for b in engine.branches)})")


def plan_from_full_steps(total: int, full_steps: Iterable[int], branch: int, name: str = "") -> Plan:
    """Full at the given step indices, ``partial(branch)`` everywhere else."""
    full = {int(i) for i in full_steps}
    bad = sorted(i for i in full if not 0 <= i < total)
    if bad:
        raise UserError(f"full step {bad[0]} outside the grid 0..{total - 1}")
    return Plan(tuple(Step.full() if i in full else Step.partial(branch) for i in range(total)), name)


def uniform_plan(total: int, interval: int, branch: int, name: str = "") -> Plan:
    """DeepCache's uniform schedule: full every ``interval`` steps, ``partial(branch)`` in between."""
    _check(total, interval, branch)
    return plan_from_full_steps(total, range(0, total, interval), branch, name or f"uniform-N{interval}-b{branch}")


def num_full_steps(total: int, interval: int) -> int:
    """``ceil(T / N)``: the number of full steps of every DeepCache schedule with interval N."""
    return math.ceil(total / interval)


def quad_center_full_steps(total: int, n_full: int, center: int, pow: float) -> tuple[list[int], float]:
    """Full-step indices of the SD/DDPM "+" form and the pow that produced them (DeepCache's search)."""
    if n_full < 1:
        raise UserError(f"need at least one full step, got {n_full}")
    start_pow = pow
    while pow > 1:
        # Complex when center > 0 (or center > total): the original's Python arithmetic, kept on purpose.
        lo, hi = (-center) ** (1 / pow), (total - center) ** (1 / pow)
        values = np.linspace(lo, hi, n_full + 1) ** pow
        truncated = np.unique(np.real(values).astype(np.int32))  # int32 of a complex array keeps the real part
        indices = [0] + [int(v) + center for v in truncated[1:-1]]
        if len(indices) == n_full:
            return indices, pow
        pow -= POW_STEP
    raise UserError(f"no pow in (1, {start_pow}] gives {n_full} full steps for {total} steps around center {center}"
                    f": lower the interval, move the center or raise pow")


def quad_full_steps(total: int, n_full: int, pow: float = 1.5) -> list[int]:
    """Full-step indices of the LDM "+" form (no center, no pow search; duplicates collapse)."""
    if n_full < 1:
        raise UserError(f"need at least one full step, got {n_full}")
    if pow <= 0:
        raise UserError(f"pow must be > 0, got {pow}")
    values = np.linspace(0, total ** (1 / pow), n_full + 1) ** pow
    return [int(v) for v in np.unique(values.astype(np.int32))[:-1]]


@dataclass(frozen=True)
class DeepCacheConfig:
    """One DeepCache setting: ``form`` uniform / sd ("+", quad around center) / ldm ("+", quad from 0), on the
    grid of ``scheduler`` at ``steps`` inference steps (a flexiffusion.schedulers name; PLMS's grid has one more
    timestep than its steps, and the plan covers the whole grid)."""

    steps: int = 100
    interval: int = 5
    branch: int = 1
    form: str = "uniform"
    center: int = 15          # sd form only
    pow: float | None = None  # sd form: start of the search (default 1.4); ldm form: the exponent (default 1.5)
    scheduler: str = "ddim"

    @property
    def power(self) -> float:
        """``pow``, or the published default of the form (SD pipeline 1.4, LDM code 1.5)."""
        return self.pow if self.pow is not None else DEFAULT_POW.get(self.form, 1.4)

    @property
    def grid(self) -> int:
        from flexiffusion.schedulers import SCHEDULERS, grid_length

        if self.scheduler not in SCHEDULERS:
            raise UserError(f"unknown scheduler {self.scheduler!r}: choose one of {', '.join(sorted(SCHEDULERS))}")
        return grid_length(self.scheduler, self.steps)

    def plan(self) -> Plan:
        _check(self.steps, self.interval, self.branch)
        if self.form not in FORMS:
            raise UserError(f"unknown DeepCache form {self.form!r}: choose one of {', '.join(FORMS)}")
        total = self.grid
        if self.form == "uniform" or self.interval == 1:  # interval 1: every step full (as the original)
            return uniform_plan(total, self.interval, self.branch, self.name)
        n = num_full_steps(total, self.interval)
        if self.form == "sd":
            full, _ = quad_center_full_steps(total, n, self.center, self.power)
        else:
            full = quad_full_steps(total, n, self.power)
        return plan_from_full_steps(total, full, self.branch, self.name)

    @property
    def name(self) -> str:
        base = f"deepcache-N{self.interval}-b{self.branch}"
        if self.scheduler != "ddim":
            base = f"{base}-{self.scheduler}-{self.steps}"
        if self.form == "sd":
            return f"{base}+c{self.center}p{self.power:g}"
        if self.form == "ldm":
            return f"{base}+p{self.power:g}"
        return base


@dataclass(frozen=True)
class DeepCachePlusConfig(DeepCacheConfig):
    """DeepCache "+": a non-uniform form, ``sd`` (default) or ``ldm``."""

    form: str = "sd"

    def plan(self) -> Plan:
        if self.form not in PLUS_FORMS:
            raise UserError(f"DeepCache '+' form {self.form!r}: choose one of {', '.join(PLUS_FORMS)} (or the "
                            "'deepcache' method for the uniform schedule)")
        return super().plan()


def paper_setting(letter: str, steps: int, branch: int, plus: str | None = None, **kw) -> DeepCacheConfig:
    """The paper's DeepCache-A..D (N = 2, 5, 10, 20); ``plus`` = "sd" / "ldm" for the "+" variant."""
    key = letter.upper()
    if key not in PAPER_INTERVALS:
        raise UserError(f"unknown DeepCache setting {letter!r}: choose one of {', '.join(PAPER_INTERVALS)}")
    return DeepCacheConfig(steps, PAPER_INTERVALS[key], branch, plus or "uniform", **kw)
