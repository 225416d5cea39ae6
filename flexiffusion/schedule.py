"""Schedules as plain data: a plan gives each step of a base timestep grid a type (full / partial(b) / null).

A Flexiffusion candidate, a DeepCache setting and an AutoDiffusion candidate are all plans; one sampler loop
(:mod:`flexiffusion.sampler`) runs any of them.  Step ``i`` of a plan is step ``i`` of the scheduler's grid
(``scheduler.timesteps[i]``), so a plan's length is the number of steps of its base grid.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from typing import Iterable

from .errors import UserError


def avg_macs(total_macs: float, teacher_evaluations: int) -> float:
    """Flexiffusion's avg MACs, the one definition: total MACs / the teacher's evaluations on the same grid (the
    steps of the base grid; a table row's ``teacher_steps``), so the teacher's avg MACs is one full step."""
    if teacher_evaluations < 1:
        raise UserError(f"avg MACs over {teacher_evaluations} teacher evaluations: the grid needs at least one step")
    return total_macs / teacher_evaluations

FULL, PARTIAL, NULL = "full", "partial", "null"
KINDS = (FULL, PARTIAL, NULL)


def format_branches(branches) -> str:
    """``{1, 3}`` / ``none``: a set of branches in error messages."""
    return "{" + ", ".join(map(str, sorted(branches))) + "}" if branches else "none"


@dataclass(frozen=True)
class Step:
    """One step of a plan: ``full`` (whole U-Net, refreshes the cache), ``partial`` (shallow U-Net down to skip
    branch ``branch``, deeper features from the cache), or ``null`` (no network evaluation)."""

    kind: str
    branch: int | None = None

    @staticmethod
    def full() -> "Step":
        return Step(FULL)

    @staticmethod
    def partial(branch: int) -> "Step":
        return Step(PARTIAL, int(branch))

    @staticmethod
    def null() -> "Step":
        return Step(NULL)

    @property
    def evaluates(self) -> bool:
        return self.kind != NULL

    def to_token(self) -> str:
        return f"p{self.branch}" if self.kind == PARTIAL else self.kind[0]

    @staticmethod
    def from_token(token: str) -> "Step":
        """Parse ``f`` / ``n`` / ``p<b>`` (the compact form used in JSON)."""
        if token in ("f", FULL):
            return Step.full()
        if token in ("n", NULL):
            return Step.null()
        if token.startswith("p") and token[1:].isdigit():
            return Step.partial(int(token[1:]))
        raise UserError(f"malformed plan step {token!r}: use 'f' (full), 'n' (null) or 'p<branch>' (e.g. 'p3')")


@dataclass(frozen=True)
class Plan:
    """A per-step plan over a base grid of ``len(steps)`` timesteps."""

    steps: tuple[Step, ...]
    name: str = field(default="", compare=False)

    def __post_init__(self):
        object.__setattr__(self, "steps", tuple(self.steps))
        for s in self.steps:
            if not isinstance(s, Step) or s.kind not in KINDS:
                raise UserError(f"malformed plan step {s!r}: each step must be full, partial(b) or null")
            if (s.kind == PARTIAL) != (s.branch is not None):
                raise UserError(f"malformed plan step {s!r}: a partial step needs a branch, other steps none")

    # ---- constructors -------------------------------------------------------------------------------
    @classmethod
    def full(cls, n: int, name: str = "") -> "Plan":
        """The teacher: every step of the grid evaluates the whole U-Net."""
        return cls(tuple(Step.full() for _ in range(n)), name or f"full-{n}")

    @classmethod
    def from_tokens(cls, tokens: Iterable[str], name: str = "") -> "Plan":
        return cls(tuple(Step.from_token(t) for t in tokens), name)

    # ---- properties ---------------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self.steps)

    @property
    def nfe(self) -> int:
        """Number of network evaluations (full and partial steps)."""
        return sum(s.evaluates for s in self.steps)

    @property
    def branches(self) -> frozenset[int]:
        return frozenset(s.branch for s in self.steps if s.kind == PARTIAL)

    def tokens(self) -> list[str]:
        return [s.to_token() for s in self.steps]

    def cache_needs(self, i: int) -> frozenset[int]:
        """Branches used by the partial steps that follow full step ``i`` until the next full step."""
        needs = set()
        for s in self.steps[i + 1:]:
            if s.kind == FULL:
                break
            if s.kind == PARTIAL:
                needs.add(s.branch)
        return frozenset(needs)

    def digest(self) -> str:
        """Stable short hash of the step sequence (the name does not count)."""
        return hashlib.sha256(" ".join(self.tokens()).encode()).hexdigest()[:16]

    # ---- validation ---------------------------------------------------------------------------------
    def validate(self, num_branches: int | None = None, grid_length: int | None = None) -> "Plan":
        """Check the plan: non-empty, first step full, branches in 1..B, length equals the grid."""
        if not self.steps:
            raise UserError("empty plan: a plan needs at least one (full) step")
        if self.steps[0].kind != FULL:
            raise UserError(
                f"plan {self.name or self.digest()} starts with a {self.steps[0].kind} step: the first step must be "
                "full (partial steps need a cache and null steps a previous model output)")
        if num_branches is not None:
            bad = sorted(b for b in self.branches if not 1 <= b <= num_branches)
            if bad:
                raise UserError(f"branch {bad[0]} out of range: this U-Net has branches 1..{num_branches}")
        if grid_length is not None and len(self.steps) != grid_length:
            raise UserError(
                f"plan has {len(self.steps)} steps but the base grid has {grid_length}: build the plan for "
                f"{grid_length} steps or set the number of inference steps to {len(self.steps)}")
        return self

    # ---- JSON ---------------------------------------------------------------------------------------
    def to_dict(self) -> dict:
        return {"name": self.name, "steps": self.tokens()}

    def to_json(self) -> str:
        return json.dumps(self.to_dict())

    @classmethod
    def from_dict(cls, data) -> "Plan":
        if not isinstance(data, dict) or not isinstance(data.get("steps"), list):
            raise UserError('malformed plan: expected an object {"name": ..., "steps": ["f", "p3", "n", ...]}')
        if not all(isinstance(t, str) for t in data["steps"]):
            raise UserError("malformed plan: every entry of 'steps' must be a string such as 'f', 'p3' or 'n'")
        return cls.from_tokens(data["steps"], str(data.get("name", "")))

    @classmethod
    def from_json(cls, text: str) -> "Plan":
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise UserError(f"malformed plan JSON: {exc.msg} at line {exc.lineno} column {exc.colno}") from None
        return cls.from_dict(data)
