"""Formatting of one table cell from the store's rows: a value, its bootstrap interval, or why it is empty."""
from __future__ import annotations

import math

# metric -> (header, format)
COLUMNS = {
    "nfe": ("NFE", "{:.0f}"), "avg_macs_paper_g": ("avg MACs (G)", "{:.4g}"),
    "avg_macs_complete_g": ("avg MACs complete (G)", "{:.4g}"), "speedup_paper": ("speed-up (MACs)", "{:.2f}x"),
    "latency_s_per_image": ("s/image", "{:.4f}"), "fid": ("FID", "{:.2f}"), "rfid": ("rFID", "{:.2f}"),
    "isc": ("IS", "{:.2f}"), "precision": ("precision", "{:.3f}"), "recall": ("recall", "{:.3f}"),
    "clip_score": ("CLIP score", "{:.2f}"), "steps_above_0.9": ("steps > 0.9 similar (mean)", "{:.1f}"),
    "fraction_of_full": ("fraction of a full step", "{:.3f}"), "kendall_tau": ("Kendall's tau", "{:.3f}"),
    "kendall_p": ("p-value", "{:.2g}"), "n_images_metric": ("images", "{:.0f}"),
    "seconds_per_candidate": ("s/candidate", "{:.2f}"), "budget_g": ("budget (G)", "{:.3g}"),
    "evaluations": ("evaluations", "{:.0f}"), "search_s": ("search (s)", "{:.0f}"),
}
COST_METRICS = {"nfe", "grid", "avg_macs_paper_g", "avg_macs_complete_g", "speedup_paper", "speedup_complete"}


def header(metric: str) -> str:
    return COLUMNS.get(metric, (metric, ""))[0]


def fmt(metric: str, value) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    return COLUMNS.get(metric, (metric, "{:.4g}"))[1].format(value)


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
