"""Benchmark tracking: compare a run's tracked figures with a stored baseline (pytest-benchmark JSON).

A benchmark records tracked figures in ``extra_info["tracked"]``, each ``{"value": v, ...}`` under a name with a
kind prefix:

* ``exact:NAME``: NFE, MACs, plan digests: any change is a regression (shown as a diff);
* ``ratio:NAME``: a latency ratio measured within one run (engine overhead, partial vs full, speed-up), with
  ``better`` (``"lower"`` / ``"higher"``) and ``threshold`` (relative change allowed in the worse direction);
* ``quality:NAME``: a lower-is-better quality figure (rFID of a fixed schedule) with an absolute ``tolerance``.

Thresholds and tolerances are taken from the **baseline** entry (the stored, reviewed file).  Absolute times are
never compared: they depend on the machine.
"""
from __future__ import annotations

import json
from pathlib import Path

from flexiffusion.errors import UserError

KINDS = ("exact", "ratio", "quality")


def tracked(path) -> dict[str, dict]:
    """``{"BENCHMARK::kind:NAME": entry}`` of a pytest-benchmark JSON file."""
    try:
        data = json.loads(Path(path).read_text())
        out = {}
        for b in data["benchmarks"]:
            for name, entry in (b.get("extra_info", {}).get("tracked") or {}).items():
                kind = name.split(":", 1)[0]
                if kind not in KINDS or "value" not in entry:
                    raise UserError(f"{path}: tracked figure {name!r} of {b['name']} needs a kind prefix "
                                    f"({', '.join(KINDS)}) and a 'value'")
                out[f"{b['name']}::{name}"] = entry
        if not out:
            raise UserError(f"{path} has no tracked figures (extra_info['tracked']): it is not a benchmark file of "
                            "this suite; give the JSON that `pytest benchmarks --benchmark-json` wrote")
        return out
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise UserError(f"{path} is not a pytest-benchmark JSON file ({exc}): give the file --benchmark-json "
                        "or --benchmark-autosave wrote") from None


def compare(baseline: dict[str, dict], current: dict[str, dict]) -> list[str]:
    """One line per regression (empty: none)."""
    problems = []
    for key, base in sorted(baseline.items()):
        kind = key.split("::", 1)[1].split(":", 1)[0]
        if key not in current:
            problems.append(f"{key}: missing from the current run")
            continue
        b, c = base["value"], current[key]["value"]
        if kind == "exact":
            if b != c:
                import difflib

                diff = difflib.unified_diff(json.dumps(b, indent=1, sort_keys=True).splitlines(),
                                            json.dumps(c, indent=1, sort_keys=True).splitlines(), "baseline",
                                            "current", lineterm="")
                problems.append(f"{key}: changed\n" + "\n".join(diff))
        elif kind == "ratio":
            change = (c - b) / b if base.get("better", "lower") == "lower" else (b - c) / b
            if change > base["threshold"]:
                problems.append(f"{key}: {b:.4g} -> {c:.4g} ({100 * change:+.1f} % worse; threshold "
                                f"{100 * base['threshold']:.0f} %)")
        elif c - b > base["tolerance"]:
            problems.append(f"{key}: {b:.5g} -> {c:.5g} (+{c - b:.3g}; tolerance {base['tolerance']:.3g})")
    return problems
