"""The experiment-local row kinds that are plans rather than registry methods: ``pattern`` (a segment of step
tokens repeated over a DDIM grid, e.g. Table 10's handcrafted schedule) and ``random`` (segments of random interval
and branch drawn with a seeded numpy generator)."""
from __future__ import annotations

import numpy as np

from flexiffusion.errors import UserError
from flexiffusion.schedule import Plan, Step

PLAN_METHODS = ("pattern", "random")


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


def plan_for(method: str, config: dict, label: str) -> Plan:
    try:
        if method == "pattern":
            return pattern_plan(str(config["pattern"]), int(config.get("steps", 100)), label)
        return random_plan(int(config.get("seed", 0)), int(config.get("steps", 100)),
                           config.get("intervals", [1, 2, 3]), config.get("branches", [1, 2, 3]), label)
    except KeyError as exc:
        raise UserError(f"{method} row {label!r} needs config field {exc.args[0]!r}") from None
