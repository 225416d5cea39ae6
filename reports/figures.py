"""Plots of experiments as PNG (matplotlib, Agg backend): Pareto fronts (avg MACs vs a quality metric, with its
interval), a forest plot of paired differences against a reference row, schedules as step-type strips (each step at
its timestep on the teacher's grid), a line of one metric against another (quality vs branch), similarity heat maps;
Fig. B.1 (MACs vs branch) is bench.cost.export.plot_branches, re-exported here.  Axes are labelled in words from the
metric registry (bench.results: header, unit, better direction), never with a column name."""
from __future__ import annotations

import os
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from bench.cost.export import plot_branches  # noqa: E402,F401  (Fig. B.1)
from bench.results import METRICS  # noqa: E402

WORDS = {"branch": "skip branch b of the partial steps"}   # axes that are no metric of the registry


def axis_label(name: str) -> str:
    """An axis label in words from the metric registry: header, unit where the header does not name it, which
    direction is better (``avg MACs (G), lower is better``); a name outside it in words (:data:`WORDS`)."""
    m = METRICS.get(name)
    if m is None:
        return WORDS.get(name, name.replace("_", " "))
    text = m.header
    if m.unit and f"({m.unit})" not in text and m.unit not in ("x",):
        text += f" ({m.unit})"
    return text + (f", {m.better} is better" if m.better else "")


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
    """``records``: dicts with label, x, y and optionally y_low / y_high; the non-dominated ones joined.  A record
    with ``<y>_reference`` (rFID's own teacher) is drawn as the reference: a hollow marker, no interval."""
    recs = [r for r in records if r.get(x) is not None and r.get(y) is not None]
    fig, ax = plt.subplots(figsize=(6, 4))
    for r in recs:
        err = None
        if r.get(f"{y}_low") is not None:
            err = [[max(0.0, r[y] - r[f"{y}_low"])], [max(0.0, r[f"{y}_high"] - r[y])]]
        reference = r.get(f"{y}_reference")
        ax.errorbar(r[x], r[y], yerr=err, fmt="o", ms=5 if reference else 4, capsize=2,
                    mfc="white" if reference else None)
        ax.annotate(r["label"] + (" (reference)" if reference else ""), (r[x], r[y]), fontsize=6, xytext=(3, 3),
                    textcoords="offset points")
    front = [recs[i] for i in pareto_front([(r[x], r[y]) for r in recs])]
    if front:
        ax.plot([r[x] for r in front], [r[y] for r in front], "k--", lw=0.8, label="Pareto front")
        ax.legend(fontsize=7)
    floor = getattr(METRICS.get(y), "floor", None)
    if floor is not None and recs and min(r[y] for r in recs) >= floor:
        ax.set_ylim(bottom=floor)   # FID is a distance: no axis below 0
    ax.set_xlabel(axis_label(x))
    bars = any(r.get(f"{y}_low") is not None for r in recs)
    ax.set_ylabel(axis_label(y) + ("\n(bars: 95 % bootstrap interval, unpaired)" if bars else ""), fontsize=8)
    ax.set_title(title, fontsize=9)
    return _save(fig, path)


def forest(diffs, path, reference: str, metric: str = "FID", title: str = "") -> Path:
    """A forest plot of paired differences against ``reference``: one line per row (``diffs``: dicts with label,
    value, low, high, significant), the point and its paired interval, a vertical line at 0; a filled marker where
    the interval excludes 0 (significant), hollow where it does not."""
    fig, ax = plt.subplots(figsize=(6, 0.45 * max(1, len(diffs)) + 1.4))
    for i, d in enumerate(diffs):
        y = len(diffs) - 1 - i
        ax.plot([d["low"], d["high"]], [y, y], "-", color="#1f4e79", lw=1.5)
        ax.plot(d["value"], y, "o", ms=6, color="#1f4e79", mfc="#1f4e79" if d["significant"] else "white")
    ax.axvline(0, color="#888", lw=0.8, ls="--")
    ax.set_yticks(range(len(diffs)), [d["label"] for d in reversed(diffs)], fontsize=7)
    ax.set_ylim(-0.7, len(diffs) - 0.3)
    ax.set_xlabel(f"{metric}(row) - {metric}({reference}), paired over the same seeds\n"
                  "(lower: better than the reference; filled: the 95 % interval excludes 0)", fontsize=8)
    ax.set_title(title, fontsize=9)
    return _save(fig, path)


STEP_COLOURS = {"f": "#1f4e79", "n": "#bbbbbb"}


def timestep_positions(timesteps, base) -> list[float]:
    """Where each timestep falls on the base grid ``base`` (the teacher's timesteps, descending: index 0 is the
    first, noisiest step): its index where the base holds it, else interpolated linearly between the neighbouring
    grid timesteps (extrapolated with the end spacing beyond either end)."""
    base = np.asarray(base, dtype=float)
    if len(base) < 2:
        return [0.0 for _ in timesteps]
    out = []
    for t in np.asarray(timesteps, dtype=float):
        if t > base[0]:
            out.append(float(-(t - base[0]) / (base[0] - base[1])))
        elif t < base[-1]:
            out.append(float(len(base) - 1 + (base[-1] - t) / (base[-2] - base[-1])))
        else:
            out.append(float(np.interp(t, base[::-1], np.arange(len(base))[::-1])))
    return out


def schedule_strips(plans: dict, path, title: str = "", timesteps: dict | None = None, base=None,
                    order_label: str = "step, in sampling order (timesteps not stored)") -> Path:
    """One strip per plan (label -> step tokens such as "f", "p3", "n"): full dark, partial shaded by branch, null
    grey.  With ``timesteps`` (label -> the timestep of each step) and ``base`` (the teacher's grid) every step is
    drawn at its timestep on the base grid, so a 10-step plan spreads over the whole strip; without them (a plan's
    timesteps unknown) in sampling order."""
    from matplotlib.patches import Patch

    at_timesteps = base is not None and timesteps is not None and all(timesteps.get(k) for k in plans)
    fig, ax = plt.subplots(figsize=(8, 0.45 * max(1, len(plans)) + 1.3))
    cmap = plt.get_cmap("YlOrBr")
    colour = lambda t: STEP_COLOURS.get(t) or cmap(0.3 + 0.07 * int(t[1:]))  # noqa: E731
    lo, hi = 0.0, float(max((len(t) for t in plans.values()), default=1))
    for row, (label, tokens) in enumerate(plans.items()):
        xs = (timestep_positions(timesteps[label], base) if at_timesteps else [float(i) for i in range(len(tokens))])
        gaps = np.diff(sorted(xs))
        width = float(min(1.0, max(0.2, gaps[gaps > 0].min()))) if (gaps > 0).any() else 1.0
        for x, t in zip(xs, tokens):
            ax.add_patch(plt.Rectangle((x - width / 2 if at_timesteps else x, row), width, 0.8, color=colour(t),
                                       lw=0))
        if xs:
            lo, hi = min(lo, min(xs) - 0.5), max(hi, max(xs) + 1)
    if at_timesteps:
        lo, hi = min(lo, -0.5), max(hi, len(base) - 0.5)
        ticks = sorted(set(np.linspace(0, len(base) - 1, 6).round().astype(int)))
        ax.set_xticks(ticks, [str(int(base[i])) for i in ticks], fontsize=7)
        ax.set_xlabel(f"timestep t on the teacher's {len(base)}-step grid, sampling left to right (blank: no step "
                      "at that timestep)", fontsize=8)
    else:
        ax.set_xlabel(order_label, fontsize=8)
    used = sorted({t for tokens in plans.values() for t in tokens}, key=lambda t: (t != "f", t == "n", t))
    names = {"f": "f (full)", "n": "n (null)"}
    ax.legend(handles=[Patch(facecolor=colour(t), label=names.get(t, f"{t} (partial)")) for t in used],
              loc="lower center", bbox_to_anchor=(0.5, 1.0), ncol=len(used), fontsize=7, frameon=False)
    ax.set_xlim(lo, hi)
    ax.set_ylim(len(plans), -0.2)   # the first plan on top, as in the table
    ax.set_yticks([r + 0.4 for r in range(len(plans))], list(plans), fontsize=7)
    ax.set_title(title, fontsize=9, pad=18)
    return _save(fig, path)


def evaluations(points, path, budget: float | None, xlabel: str, ylabel: str, title: str = "") -> Path:
    """Every evaluated candidate of a search (dicts with x, y, ``pareto``, ``best``): grey dots, the Pareto set
    joined, the best starred, the budget (same unit as x) as a dashed vertical line."""
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot([p["x"] for p in points], [p["y"] for p in points], "o", ms=3, color="#999", label="evaluated")
    front = sorted((p for p in points if p["pareto"]), key=lambda p: p["x"])
    if front:
        ax.plot([p["x"] for p in front], [p["y"] for p in front], "o-", ms=4, color="#1f4e79", lw=1,
                label="Pareto set")
    for p in points:
        if p["best"]:
            ax.plot(p["x"], p["y"], "*", ms=12, color="#c0392b", label="best (within the budget)")
    if budget:
        ax.axvline(budget, color="#888", ls="--", lw=0.8, label="budget")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel, fontsize=8)
    ax.legend(fontsize=7)
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
    ax.set_xlabel(axis_label(x))
    ax.set_ylabel(axis_label(y))
    ax.set_title(title, fontsize=9)
    return _save(fig, path)


def heatmaps(matrices: dict, path, title: str = "") -> Path:
    """One panel per matrix (label -> square list of lists), values in [0, 1]."""
    n = max(1, len(matrices))
    fig, axes = plt.subplots(1, n, figsize=(3.4 * n, 3.2), squeeze=False)
    for ax, (label, m) in zip(axes.flat, matrices.items()):
        im = ax.imshow(m, vmin=0, vmax=1, cmap="viridis")
        ax.set_title(label, fontsize=8)
        ax.set_xlabel("step i (sampling order)")
        ax.set_ylabel("step j (sampling order)")
    fig.colorbar(im, ax=list(axes.flat), fraction=0.03).set_label("cosine similarity", fontsize=8)
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
    ax.set_xlabel(axis_label(x))
    ax.set_ylabel(axis_label(y))
    ax.legend(fontsize=7)
    ax.set_title(title, fontsize=9)
    return _save(fig, path)
