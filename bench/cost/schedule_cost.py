"""NFE, average MACs and speedup of a plan, Flexiffusion's cost measure (Tables 1-3), from a per-model lookup table.

*NFE* = U-Net evaluations the sampler runs (full + partial steps).  *avg MACs* of a plan = total U-Net MACs over the
plan / the teacher's evaluations on the same grid (``len(plan.steps)``: every grid step of the all-full plan is one
evaluation), so the teacher's avg MACs is one full step on every scheduler; *speedup* = that / avg MACs of the plan.
E.g. LDM-4-G, 250 DDIM steps: 99.82 G full; Flexiffusion-C 9.91 G, speedup 10.1x.  PLMS: diffusers repeats one
timestep, so PLMS-50's grid has 51 steps and its teacher NFE is 51 (the paper lists 50); its avg MACs is one full
step, as in the paper.

A :class:`CostModel` holds one number per step type (null, partial(1..B), full), so costing a candidate is a sum of
dictionary lookups: the evolutionary search (Algorithm 1, cost estimator C) calls it thousands of times.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Sequence

from flexiffusion.errors import UserError
from flexiffusion.schedule import Plan, Step, avg_macs  # noqa: F401  (the one definition, re-exported)

from .counting import COMPLETE, PAPER, G, check_convention
from .macs import preset_table
from .table import MacsTable


@dataclass(frozen=True)
class PlanCost:
    """Cost of one plan on one model, in one MACs convention."""

    model: str
    convention: str
    steps: int           # length of the base grid
    nfe: int             # network evaluations (full + partial steps)
    total_macs: int      # U-Net MACs over the whole plan, one image
    full_macs: int       # one full step
    extra_macs: int = 0  # once per image besides the U-Net (complete: text encoder(s) and decoder)

    @property
    def avg_macs(self) -> float:
        return avg_macs(self.total_macs, self.steps)

    @property
    def avg_macs_g(self) -> float:
        return self.avg_macs / G

    @property
    def speedup(self) -> float:
        """Avg MACs of the all-full plan over avg MACs of this plan."""
        return self.full_macs / self.avg_macs if self.total_macs else float("inf")

    @property
    def image_macs(self) -> int:
        """Everything one image costs: the U-Net over the plan plus the per-image parts."""
        return self.total_macs + self.extra_macs

    def to_dict(self) -> dict:
        return {"model": self.model, "convention": self.convention, "steps": self.steps, "nfe": self.nfe,
                "avg_macs_g": self.avg_macs_g, "speedup": self.speedup, "total_macs_g": self.total_macs / G,
                "image_macs_g": self.image_macs / G}


class CostModel:
    """MACs per step type of one model: ``step_macs[0]`` null, ``[b]`` partial(b), ``[B + 1]`` full."""

    def __init__(self, step_macs: Sequence[int], name: str = "", convention: str = PAPER, extra_macs: int = 0):
        check_convention(convention)
        if len(step_macs) < 2:
            raise UserError("a cost model needs at least the null and full step MACs")
        self.step_macs = tuple(int(m) for m in step_macs)
        self.name, self.convention, self.extra_macs = name, convention, int(extra_macs)
        self.num_branches = len(self.step_macs) - 2
        by_step = {Step.null(): self.step_macs[0], Step.full(): self.step_macs[-1]}
        by_step.update({Step.partial(b): self.step_macs[b] for b in range(1, self.num_branches + 1)})
        self._by_step = by_step

    @classmethod
    def from_table(cls, table: MacsTable, convention: str = PAPER) -> "CostModel":
        extra = 0
        if convention == COMPLETE:
            # The negative prompt of classifier-free guidance goes through the text encoder too.
            prompts = 2 if table.guidance else 1
            extra = prompts * (table.part_macs("text_encoder") or 0) + (table.part_macs("decoder") or 0)
        return cls(table.lookup(convention), table.preset, convention, extra)

    @classmethod
    def for_preset(cls, name: str, convention: str = PAPER,
                   cache: str | os.PathLike | None | bool = None) -> "CostModel":
        """The cost model of a preset (its MACs table from the disk cache, measured on a miss)."""
        return cls.from_table(preset_table(name, cache=cache), convention)

    @property
    def full_macs(self) -> int:
        return self.step_macs[-1]

    def step_cost(self, step: Step) -> int:
        try:
            return self._by_step[step]
        except KeyError:
            raise self._bad_step(step) from None

    def _bad_step(self, step) -> UserError:
        if isinstance(step, Step) and step.kind == "partial":
            return UserError(f"branch {step.branch} out of range: {self.name or 'this model'} has branches "
                             f"1..{self.num_branches} (is the plan for another model?)")
        return UserError(f"malformed plan step {step!r}")

    def total_macs(self, plan: Plan) -> int:
        """U-Net MACs of the whole plan (one image)."""
        try:
            return sum(map(self._by_step.__getitem__, plan.steps))
        except KeyError:
            bad = next(s for s in plan.steps if s not in self._by_step)
            raise self._bad_step(bad) from None

    def avg_macs(self, plan: Plan) -> float:
        """Flexiffusion's avg MACs: total over the plan / number of steps of the base grid."""
        if not plan.steps:
            raise UserError("empty plan: a plan needs at least one step")
        return avg_macs(self.total_macs(plan), len(plan.steps))

    def speedup(self, plan: Plan) -> float:
        avg = self.avg_macs(plan)
        return self.full_macs / avg if avg else float("inf")

    def cost(self, plan: Plan) -> PlanCost:
        if not plan.steps:
            raise UserError("empty plan: a plan needs at least one step")
        return PlanCost(self.name, self.convention, len(plan.steps), plan.nfe, self.total_macs(plan),
                        self.full_macs, self.extra_macs)

    def __repr__(self) -> str:
        return (f"CostModel({self.name!r}, {self.convention}, full={self.full_macs / G:.4g} G, "
                f"B={self.num_branches})")


def plan_cost(plan: Plan, preset: str, convention: str = PAPER) -> PlanCost:
    """One-off: the cost of ``plan`` on ``preset`` (loads the cached MACs table)."""
    return CostModel.for_preset(preset, convention).cost(plan)
