"""Sample grids (teacher vs each method, same seeds: one row per method) and schedules as step-type strips.

Both are drawn with matplotlib's Agg backend and saved atomically as PNG. A strip colours each step of a plan by
its type: full steps dark, null steps white, partial steps ``p<b>`` in a sequential colour by branch ``b``.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from flexiffusion.io import atomic_path
from flexiffusion.schedule import Plan


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path) -> Path:
    with atomic_path(path, suffix=".png") as tmp:
        fig.savefig(tmp, format="png", dpi=100, bbox_inches="tight")
    _pyplot().close(fig)
    return Path(path)


def _to_hw(image) -> np.ndarray:
    """uint8 CHW / HWC / HW array or tensor -> HW (grey) or HWC (RGB) numpy."""
    a = np.asarray(image)
    if a.ndim == 3 and a.shape[0] in (1, 3) and a.shape[-1] not in (1, 3):
        a = np.moveaxis(a, 0, -1)
    return a[..., 0] if a.ndim == 3 and a.shape[-1] == 1 else a


def sample_grid(rows: dict[str, "list | np.ndarray"], path, seeds=None, max_cols: int = 8) -> Path:
    """One row per method (teacher first, the caller's order), column j = the image of seed j for every row."""
    plt = _pyplot()
    names = list(rows)
    cols = min(max_cols, min(len(rows[n]) for n in names))
    fig, axes = plt.subplots(len(names), cols, figsize=(0.9 * cols + 1.5, 0.9 * len(names)), squeeze=False)
    for r, name in enumerate(names):
        for c in range(cols):
            ax = axes[r][c]
            ax.imshow(_to_hw(rows[name][c]), cmap="gray", vmin=0, vmax=255, interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            if c == 0:
                ax.set_ylabel(name, rotation=0, ha="right", va="center", fontsize=8)
            if r == 0 and seeds is not None:
                ax.set_title(f"seed {seeds[c]}", fontsize=7)
    return _save(fig, path)


def step_codes(plan: Plan, max_branch: int) -> np.ndarray:
    """Colour index per step: 0 = null, 1..max_branch = partial branch, max_branch + 1 = full."""
    out = []
    for t in plan.tokens():
        out.append(0 if t == "n" else max_branch + 1 if t == "f" else int(t[1:]))
    return np.array(out)


def schedule_strips(plans: list[Plan], path, max_branch: int | None = None) -> Path:
    """One horizontal strip per plan; the legend names every step type drawn."""
    plt = _pyplot()
    from matplotlib.colors import ListedColormap
    from matplotlib.patches import Patch

    branches = sorted({b for p in plans for b in p.branches})
    max_branch = max_branch if max_branch is not None else max(branches, default=0)
    partial = plt.get_cmap("YlOrRd")(np.linspace(0.25, 0.8, max(max_branch, 1)))[:max_branch]
    colours = [(1, 1, 1, 1), *partial, (0.1, 0.2, 0.5, 1)]
    cmap = ListedColormap(colours)
    width = max(len(p) for p in plans)
    fig, axes = plt.subplots(len(plans), 1, figsize=(min(12, 2 + 0.1 * width), 0.45 * len(plans) + 0.6),
                             squeeze=False)
    for ax, plan in zip(axes[:, 0], plans):
        codes = step_codes(plan, max_branch).astype(float)
        codes = np.pad(codes, (0, width - len(codes)), constant_values=np.nan)
        ax.imshow(codes[None, :], cmap=cmap, vmin=-0.5, vmax=max_branch + 1.5, aspect="auto",
                  interpolation="nearest")
        ax.set_yticks([0], [f"{plan.name or plan.digest()} (NFE {plan.nfe})"], fontsize=8)
        ax.set_xticks([])
        for x in range(width + 1):
            ax.axvline(x - 0.5, color="#ccc", lw=0.2)
    axes[-1, 0].set_xlabel("step (sampling order)")
    used = {t for p in plans for t in p.tokens()}
    legend = [Patch(facecolor=colours[-1], label="f (full)")] if "f" in used else []
    legend += [Patch(facecolor=colours[b], label=f"p{b} (partial)") for b in branches]
    legend += [Patch(facecolor="white", edgecolor="black", label="n (null)")] if "n" in used else []
    fig.legend(handles=legend, loc="upper center", ncol=len(legend), fontsize=7, bbox_to_anchor=(0.5, 1.02),
               frameon=False)
    return _save(fig, path)
