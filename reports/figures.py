"""Plots of experiments as PNG (matplotlib, Agg backend): Pareto fronts (avg MACs vs a quality metric, with its
interval), schedules as step-type strips, a line of one metric against another (quality vs branch), similarity
heat maps; Fig. B.1 (MACs vs branch) is bench.cost.export.plot_branches, re-exported here."""
from __future__ import annotations

import os
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from bench.cost.export import plot_branches  # noqa: E402,F401  (Fig. B.1)


def _save(fig, path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def pareto_front(points):
    """Indices of points (x, y) not dominated by another (lower x and lower y are better)."""
    order = sorted(range(len(points)), key=lambda i: (points[i][0], points[i][1]))
    front, best = [], float("inf")
    for i in order:
        if points[i][1] < best:
            front.append(i)
            best = points[i][1]
    return front


def pareto(records, path, x: str = "avg_macs_paper_g", y: str = "fid", title: str = "") -> Path:
    """``records``: dicts with label, x, y and optionally y_low / y_high; the non-dominated ones joined."""
    recs = [r for r in records if r.get(x) is not None and r.get(y) is not None]
    fig, ax = plt.subplots(figsize=(6, 4))
    for r in recs:
        err = None
        if r.get(f"{y}_low") is not None:
            err = [[max(0.0, r[y] - r[f"{y}_low"])], [max(0.0, r[f"{y}_high"] - r[y])]]
        ax.errorbar(r[x], r[y], yerr=err, fmt="o", ms=4, capsize=2)
        ax.annotate(r["label"], (r[x], r[y]), fontsize=6, xytext=(3, 3), textcoords="offset points")
    front = [recs[i] for i in pareto_front([(r[x], r[y]) for r in recs])]
    if front:
        ax.plot([r[x] for r in front], [r[y] for r in front], "k--", lw=0.8, label="Pareto front")
        ax.legend(fontsize=7)
    ax.set_xlabel(x)
    ax.set_ylabel(y + (" (95% bootstrap interval)" if any(r.get(f"{y}_low") is not None for r in recs) else ""))
    ax.set_title(title, fontsize=9)
    return _save(fig, path)


STEP_COLOURS = {"f": "#1f4e79", "n": "#dddddd"}


def schedule_strips(plans: dict, path, title: str = "") -> Path:
    """One strip per plan (label -> step tokens such as "f", "p3", "n"): full dark, partial shaded by branch,
    null light."""
    fig, ax = plt.subplots(figsize=(8, 0.45 * max(1, len(plans)) + 0.8))
    cmap = plt.get_cmap("YlOrBr")
    for row, (label, tokens) in enumerate(plans.items()):
        for i, t in enumerate(tokens):
            colour = STEP_COLOURS.get(t) or cmap(0.3 + 0.07 * int(t[1:]))
            ax.add_patch(plt.Rectangle((i, row), 1, 0.8, color=colour, lw=0))
    ax.set_xlim(0, max((len(t) for t in plans.values()), default=1))
    ax.set_ylim(-0.2, len(plans))
    ax.set_yticks([r + 0.4 for r in range(len(plans))], list(plans), fontsize=7)
    ax.set_xlabel("step (f dark blue, p<b> orange by branch, n grey)")
    ax.set_title(title, fontsize=9)
    return _save(fig, path)


def line(records, path, x: str, y: str, title: str = "") -> Path:
    """``y`` against ``x`` (with y_low / y_high as a band when present)."""
    recs = sorted((r for r in records if r.get(x) is not None and r.get(y) is not None), key=lambda r: r[x])
    fig, ax = plt.subplots(figsize=(5, 3.5))
    ax.plot([r[x] for r in recs], [r[y] for r in recs], "o-", ms=4)
    if recs and all(r.get(f"{y}_low") is not None for r in recs):
        ax.fill_between([r[x] for r in recs], [r[f"{y}_low"] for r in recs], [r[f"{y}_high"] for r in recs],
                        alpha=0.25, label="95% bootstrap interval")
        ax.legend(fontsize=7)
    ax.set_xlabel(x)
    ax.set_ylabel(y)
    ax.set_title(title, fontsize=9)
    return _save(fig, path)


def heatmaps(matrices: dict, path, title: str = "") -> Path:
    """One panel per matrix (label -> square list of lists), values in [0, 1]."""
    n = max(1, len(matrices))
    fig, axes = plt.subplots(1, n, figsize=(3.4 * n, 3.2), squeeze=False)
    for ax, (label, m) in zip(axes.flat, matrices.items()):
        im = ax.imshow(m, vmin=0, vmax=1, cmap="viridis")
        ax.set_title(label, fontsize=8)
        ax.set_xlabel("step")
        ax.set_ylabel("step")
    fig.colorbar(im, ax=list(axes.flat), fraction=0.03)
    fig.suptitle(title, fontsize=9)
    fig.savefig(Path(path), dpi=110)
    plt.close(fig)
    return Path(path)


def curves(series: dict, path, x: str, y: str, title: str = "") -> Path:
    """Several lines (label -> [(x, y), ...]) on one axis, e.g. Fig. B.1 from the store's rows."""
    fig, ax = plt.subplots(figsize=(5.5, 3.8))
    for label, pts in series.items():
        pts = sorted(pts)
        ax.plot([p[0] for p in pts], [p[1] for p in pts], "o-", ms=3, label=label)
    ax.set_xlabel(x)
    ax.set_ylabel(y)
    ax.legend(fontsize=7)
    ax.set_title(title, fontsize=9)
    return _save(fig, path)
