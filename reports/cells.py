"""Formatting of one table cell from the store's rows: a value, its bootstrap interval, or why it is empty.
Headers and number formats are the metric registry's (bench.results)."""
from __future__ import annotations

from bench.results import METRICS, fmt, header  # noqa: F401  (headers and formats: the metric registry's)

COST_METRICS = {"nfe", "grid", "avg_macs_paper_g", "avg_macs_complete_g", "speedup_paper", "speedup_complete"}


CLIPPED = "†"     # after an interval end that the metric's range clipped
CLIP_NOTE = ("† an interval end clipped at the metric's range (FID, rFID, PSNR and LPIPS are never below 0, SSIM "
             "never above 1): the normal interval value -/+ 1.96 sd leaves it when the spread is wide against the "
             "value")
REFERENCE = "reference (0 by definition)"   # rFID of the row that is rFID's own teacher


def _normal(metric: str, values: dict, level: float):
    v, sd = values.get(metric), values.get(f"{metric}_sd")
    if v is not None and sd is not None:
        from statistics import NormalDist

        z = NormalDist().inv_cdf(0.5 + level / 2)
        return v - z * sd, v + z * sd
    return values.get(f"{metric}_low"), values.get(f"{metric}_high")


def _range(metric: str):
    m = METRICS.get(metric)
    return getattr(m, "floor", None), getattr(m, "ceiling", None)


def interval(metric: str, values: dict, level: float = 0.95):
    """The normal bootstrap interval value -/+ z sd from a row's ``<metric>_sd`` (rows store the replicates' sd;
    older rows' stored low/high were basic intervals, see bench.quality.bootstrap), else its stored low/high; its
    ends clipped at the metric's range (bench.results: FID is never below 0, SSIM never above 1)."""
    lo, hi = _normal(metric, values, level)
    floor, ceiling = _range(metric)
    if lo is not None and floor is not None:
        lo = max(lo, floor)
    if hi is not None and ceiling is not None:
        hi = min(hi, ceiling)
    return lo, hi


def clipped(metric: str, values: dict, level: float = 0.95) -> bool:
    """Whether :func:`interval` clipped the lower end at the metric's floor."""
    lo, _ = _normal(metric, values, level)
    floor, _ = _range(metric)
    return lo is not None and floor is not None and lo < floor


def clipped_high(metric: str, values: dict, level: float = 0.95) -> bool:
    """Whether :func:`interval` clipped the upper end at the metric's ceiling."""
    _, hi = _normal(metric, values, level)
    _, ceiling = _range(metric)
    return hi is not None and ceiling is not None and hi > ceiling


def with_spread(metric: str, values: dict) -> str:
    """``58.96 [52.10, 66.00]`` when the row holds a bootstrap spread for ``metric`` (``[0.00†, 8.56]``: clipped at
    the metric's floor, :data:`CLIP_NOTE`)."""
    text = fmt(metric, values.get(metric))
    lo, hi = interval(metric, values)
    if text and lo is not None and hi is not None:
        text += (f" [{fmt(metric, lo)}{CLIPPED if clipped(metric, values) else ''}, "
                 f"{fmt(metric, hi)}{CLIPPED if clipped_high(metric, values) else ''}]")
    return text
