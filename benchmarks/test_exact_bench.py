"""Exact figures (NFE, MACs per step type and plan, digests of a fixed seeded search) against
benchmarks/expected/exact.json; any change fails with a unified diff.  Regenerate after an intended change:
``PYTHONPATH=. python -m benchmarks.exact_checks --write``."""
from __future__ import annotations

import difflib
import json

from benchmarks.exact_checks import EXPECTED, compute, dumps


def test_exact_figures(benchmark):
    current = benchmark.pedantic(compute, rounds=1, iterations=1)
    benchmark.extra_info["tracked"] = {f"exact:{k}": {"value": v} for k, v in current.items()}
    expected = EXPECTED.read_text()
    if dumps(current) != expected:
        diff = "\n".join(difflib.unified_diff(expected.splitlines(), dumps(current).splitlines(), str(EXPECTED),
                                              "current", lineterm=""))
        raise AssertionError(f"exact benchmark figures changed (regenerate with "
                             f"`python -m benchmarks.exact_checks --write` if intended):\n{diff}")
    assert json.loads(expected) == current
