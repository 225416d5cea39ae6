"""Ranking consistency of a cheap metric with a reference one: Kendall's tau (scipy.stats.kendalltau, tau-b).

Used as in Flexiffusion Sec. 5.5 / Table 4 and appendix F: the metric values of the same candidates under two
metrics (e.g. rFID-1k vs FID-50k); ties are handled by tau-b.
"""
from __future__ import annotations

import math

import numpy as np

from flexiffusion.errors import UserError


def kendall_tau(scores_a, scores_b) -> dict:
    """``{"kendall_tau": tau, "p_value": p, "n_candidates": n}`` between two score lists of the same candidates."""
    from scipy.stats import kendalltau

    a = np.asarray(scores_a, dtype=np.float64).ravel()
    b = np.asarray(scores_b, dtype=np.float64).ravel()
    if a.shape != b.shape:
        raise UserError(f"Kendall's tau compares scores of the same candidates: got {a.size} and {b.size} values")
    if a.size < 2:
        raise UserError(f"Kendall's tau needs at least 2 candidates; got {a.size}")
    bad = np.flatnonzero(~(np.isfinite(a) & np.isfinite(b)))
    if bad.size:
        raise UserError(f"Kendall's tau: non-finite score(s) at candidate index {', '.join(map(str, bad[:20]))}")
    res = kendalltau(a, b)
    tau, p = float(res.statistic), float(res.pvalue)
    if math.isnan(tau):
        raise UserError("Kendall's tau is undefined: one of the score lists is constant")
    return {"kendall_tau": tau, "p_value": p, "n_candidates": int(a.size)}
