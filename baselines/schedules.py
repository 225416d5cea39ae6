"""Hand-made schedules on the DDIM grid, as registry methods (Table 10): ``pattern`` (a segment of step tokens
repeated over the grid, e.g. the handcrafted ``f p3 p3``) and ``random`` (segments of random interval and branch
drawn with a seeded numpy generator)."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from flexiffusion.errors import UserError
from flexiffusion.schedule import Plan, Step


@dataclass(frozen=True)
class PatternConfig:
    """``pattern`` (step tokens f, n, p<branch>; starts with a full step) repeated over ``steps`` DDIM steps."""

    pattern: str = ""
    steps: int = 100


@dataclass(frozen=True)
class RandomConfig:
    """Segments of a full step then ``interval - 1`` partial steps at ``branch``, interval and branch drawn
    uniformly from ``intervals`` and ``branches`` by ``numpy.random.default_rng(seed)``, over ``steps`` DDIM steps."""

    seed: int = 0
    steps: int = 100
    intervals: list | tuple = (1, 2, 3)
    branches: list | tuple = (1, 2, 3)

    def __post_init__(self):
        for name in ("intervals", "branches"):
            value = getattr(self, name)
            if not isinstance(value, (list, tuple)) or not all(isinstance(v, int) and not isinstance(v, bool)
                                                               for v in value):
                raise UserError(f"random config {name} = {value!r}: expected a list of integers")
            object.__setattr__(self, name, tuple(value))


def _token(text: str) -> Step:
    if text == "f":
        return Step.full()
    if text == "n":
        return Step.null()
    if text.startswith("p") and text[1:].isdigit():
        return Step.partial(int(text[1:]))
    raise UserError(f"plan token {text!r}: use f, n or p<branch>")


def pattern_plan(pattern: str, steps: int, name: str) -> Plan:
    seg = [_token(t) for t in pattern.split()]
    if not seg or seg[0] != Step.full():
        raise UserError(f"pattern {pattern!r} must start with a full step 'f'")
    return Plan([seg[i % len(seg)] for i in range(steps)], name)


def random_plan(seed: int, steps: int, intervals, branches, name: str) -> Plan:
    rng = np.random.default_rng(seed)
    out: list[Step] = []
    while len(out) < steps:
        interval, branch = int(rng.choice(intervals)), int(rng.choice(branches))
        out += [Step.full()] + [Step.partial(branch)] * (interval - 1)
    return Plan(out[:steps], name)


def pattern(c: PatternConfig) -> tuple[Plan, str]:
    if not c.pattern:
        raise UserError("the pattern method needs config field 'pattern' (step tokens, e.g. \"f p3 p3\")")
    return pattern_plan(c.pattern, int(c.steps), f"pattern[{c.pattern}]-{c.steps}"), "ddim"


def random(c: RandomConfig) -> tuple[Plan, str]:
    if not c.intervals or not c.branches:
        raise UserError("the random method needs non-empty 'intervals' and 'branches'")
    return random_plan(int(c.seed), int(c.steps), list(c.intervals), list(c.branches),
                       f"random-s{c.seed}-{c.steps}"), "ddim"
