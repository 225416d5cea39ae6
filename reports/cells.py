"""Formatting of one table cell from the store's rows: a value, its bootstrap interval, or why it is empty.
Headers and number formats are the metric registry's (bench.results)."""
from __future__ import annotations

from bench.results import fmt, header  # noqa: F401  (headers and formats: the metric registry's)

COST_METRICS = {"nfe", "grid", "avg_macs_paper_g", "avg_macs_complete_g", "speedup_paper", "speedup_complete"}


def interval(metric: str, values: dict, level: float = 0.95):
    """The normal bootstrap interval value -/+ z sd from a row's ``<metric>_sd`` (rows store the replicates' sd;
    older rows' stored low/high were basic intervals, see bench.quality.bootstrap), else its stored low/high."""
    v, sd = values.get(metric), values.get(f"{metric}_sd")
    if v is not None and sd is not None:
        from statistics import NormalDist

        z = NormalDist().inv_cdf(0.5 + level / 2)
        return v - z * sd, v + z * sd
    return values.get(f"{metric}_low"), values.get(f"{metric}_high")


def with_spread(metric: str, values: dict) -> str:
    """``58.96 [52.10, 66.00]`` when the row holds a bootstrap spread for ``metric``."""
    text = fmt(metric, values.get(metric))
    lo, hi = interval(metric, values)
    if text and lo is not None and hi is not None:
        text += f" [{fmt(metric, lo)}, {fmt(metric, hi)}]"
    return text
