"""Injected slowdowns, to prove that benchmark tracking catches a real regression (docs/benchmarks.md).

``FLEXBENCH_INJECT=partial=0.15`` makes every partial step through the step engine 15 % slower (a busy wait of 15 %
of the step's own time after it); ``engine=0.15`` does it to every step the engine runs (full and partial), i.e. the
engine's cost on a full step rises by 15 % of a step against the model's native forward.  Applied by
``benchmarks/conftest.py`` for a whole pytest session; production code is never changed.
"""
from __future__ import annotations

import contextlib
import os
import time

from flexiffusion.errors import UserError

TARGETS = ("partial", "engine")
ENV = "FLEXBENCH_INJECT"


def parse(spec: str) -> tuple[str, float]:
    """``"partial=0.15"`` -> ``("partial", 0.15)``."""
    target, _, frac = spec.partition("=")
    try:
        value = float(frac)
    except ValueError:
        value = -1.0
    if target not in TARGETS or not 0 < value < 10:
        raise UserError(f"{ENV}={spec!r}: give TARGET=FRACTION with TARGET one of {', '.join(TARGETS)} and "
                        "0 < FRACTION < 10 (e.g. partial=0.15)")
    return target, value


def _busy(seconds: float) -> None:
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        pass


def install(spec: str):
    """Patch ``StepEngine.step`` with the slowdown; returns a function that removes it."""
    from flexiffusion.engine import StepEngine
    from flexiffusion.schedule import PARTIAL

    target, frac = parse(spec)
    original = StepEngine.step

    @contextlib.contextmanager
    def slowed(self, step, keep=None):
        start = time.perf_counter()
        with original(self, step, keep) as engine:
            yield engine
        if target == "engine" or step.kind == PARTIAL:
            _busy(frac * (time.perf_counter() - start))

    StepEngine.step = slowed

    def remove():
        StepEngine.step = original

    return remove


def from_environment():
    spec = os.environ.get(ENV, "").strip()
    return install(spec) if spec else None
